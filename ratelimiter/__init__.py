"""The rate limiter process: the one owner of the LINE Messaging API connections. Token buckets
per endpoint, push->multicast batching, the call journal, and the LINE API client."""
