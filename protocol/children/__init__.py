"""How a frontdesk process starts, watches and talks to its children.

Two supervisors share this plumbing: `frontdesk run` (command/supervisor.py: the receiver, the
dispatcher, the sandbox, the status page) and the dispatcher (dispatcher/arbiter.py: its handlers
and its rate limiter). It lives in protocol/ because protocol/ is what every room may import and
is already "how a process starts" (settings in the environment, secrets as descriptors): the
command then needs nothing from the dispatcher's folder, and the conformance kit (handlers/, which
may import protocol/ only) speaks to a handler with the same pieces the dispatcher uses.

- `lifeline`: a child started so that it dies with us (its own process group, PR_SET_PDEATHSIG).
- `loop`: the one event loop of a supervisor, and signals that only enqueue (one handled set,
  one `handle_<signal>` method per signal on the owner).
- `lifecycle`: the one life cycle of a supervised child (named states, guarded transitions,
  separate restart and kill deadlines); `policy`: its restart backoff and the degraded mark.
- `stream`: bytes in, msgpack-rpc messages out; `framed`: a frame-speaking child on the loop (the
  dispatcher's handlers and rate limiter); `client`: the same from blocking code (the kit, tests).
"""
