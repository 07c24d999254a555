"""Stream processing: the topic catalog and the billing topology on the `backbone.streams` runtime."""
