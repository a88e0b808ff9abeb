"""What the annotation service talks to: SQL (durable record), Redis (live queues), Kafka, the blob store."""
