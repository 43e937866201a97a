"""The master process: follows the store, routes events to handlers, supervises every process;
the rate limiter and LINE API client; the `frontdesk` command."""
