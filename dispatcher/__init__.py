"""The dispatcher process: follows the store, routes events to handler processes in order per
conversation, supervises the handlers and its rate limiter child."""
