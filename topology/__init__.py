"""Stream processing: the topic catalog and the billing topology (faust-streaming)."""
