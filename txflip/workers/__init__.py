"""
C{--workers N}: one generation served by N processes, restarted together.

With C{--workers 1} (the default) a generation is one process, as always. With
N > 1 the process that C{twistd flip} starts is the generation's I{leader}: it
runs the L{Generation} (restarts, the PID file, the control socket, sd_notify),
opens the listening sockets and never accepts on them; it starts N I{workers}
with the same command line, hands each the listening sockets, and is ready
once all N are. Every worker serves every listener from the one shared
socket. When the leader's generation moves (serving, handed over, taken back,
stopping), the leader tells its workers to accept, pause, drain or stop.

  - L{txflip.workers.leader}: the leader's generation and registry.
  - L{txflip.workers.pool}: the workers of one generation, their readiness and replacement.
  - L{txflip.workers.process}: starting one worker process and talking to it.
  - L{txflip.workers.commands}: the command channel between a leader and a worker.
  - L{txflip.workers.worker}: the worker's side.
  - L{txflip.workers.backoff}: how long to wait before replacing a worker that crashed.
  - L{txflip.workers.role}: the worker's part of the environment, and C{--workers auto}.
"""
