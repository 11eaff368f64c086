"""Pure detection logic: no Kafka, Elasticsearch, clock or environment. Time and data come in
as arguments and results go out as frozen dataclasses that carry their reasons."""
