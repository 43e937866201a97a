"""A local LINE Messaging API emulator and a signed-webhook load generator."""
