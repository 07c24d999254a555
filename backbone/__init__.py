"""backbone: an event-driven integration backbone for professional-services firms.

The Python API for programs lives in the subpackages; the most used names are re-exported here
lazily so that `import backbone` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
