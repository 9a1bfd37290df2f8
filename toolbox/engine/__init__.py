"""A small typed client of the Docker Engine API the guest agent serves, reached through
the host agent's socket (~/.toolbox/<name>/docker.sock): what `toolbox run|ps|images|...`
use, so a user needs no docker CLI.

    http.py     HTTP/1.1 over a unix socket: plain requests, streamed bodies, the hijack
    client.py   EngineClient: one typed method per API call, errors as EngineError
    stdio.py    the hijacked stream: frames demultiplexed, stdin pumped, a raw local TTY
    session.py  what `run` and `exec` do with those calls (create, pull, attach, start, wait)
"""
