"""The worker layer: the Faust app and everything that touches Kafka, Elasticsearch, files,
the clock or the environment."""
