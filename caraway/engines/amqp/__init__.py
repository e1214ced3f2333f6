"""The AMQP engine (RabbitMQ): client plumbing, broker, broadcast and the ``rpc://`` backend."""
