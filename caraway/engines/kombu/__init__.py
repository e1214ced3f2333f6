"""The kombu bridge: any kombu transport (SQS, Azure, GCP, Kafka, filesystem ...) as a broker."""
