"""How the trainer is reached: HTTP API, Kafka consumer loop, `michi train` and `michi experiments`."""
