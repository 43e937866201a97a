"""A local LINE Messaging API emulator and the webhook/event factory; it speaks HTTP only."""
