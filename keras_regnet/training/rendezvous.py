"""Processes of a data-parallel job meet at process 0's address before JAX joins them.

JAX's own join (``jax.distributed.initialize``) ends a process that waits too long in a C++
abort with a stack trace, whichever side is missing: a peer started with the wrong
``--coordinator_address``, or process 0 never started. Meeting first over a plain TCP socket
on the same port turns each of those into one line that names what is missing, within
``--join_timeout``; JAX's coordination service then takes the port over.

Protocol: every other process connects (retrying: process 0 may start last) and sends
``keras_regnet-join <process_id> <num_processes>``; once all have, process 0 answers ``go`` to
each (or ``error <why>``) and closes its socket.
"""

from __future__ import annotations

import socket
import time

GREETING = "keras_regnet-join"
RETRY_SECONDS = 0.2


class JoinError(ValueError):
    """The job's processes did not all meet; the message names what to fix."""


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); a ValueError that shows the form.

    Example:
        >>> split_address("10.0.0.2:9876")
        ('10.0.0.2', 9876)
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator_address must be HOST:PORT (process 0's host and a free port, "
                         f"e.g. 10.0.0.2:9876), got {address!r}.")
    return host.strip("[]"), int(port)


def meet(address: str, process_id: int, num_processes: int, timeout: float) -> None:
    """Returns once all ``num_processes`` processes have met at ``address`` (process 0 listens
    on its port); raises JoinError after ``timeout`` seconds if they have not.

    Example (one process alone meets at once):
        >>> meet("127.0.0.1:1", 0, 1, timeout=1)
    """
    if num_processes < 2:
        return
    host, port = split_address(address)
    deadline = time.monotonic() + timeout
    if process_id == 0:
        _host_the_meeting(port, num_processes, deadline, timeout)
    else:
        _join_the_meeting(address, host, port, process_id, num_processes, deadline, timeout)


def _host_the_meeting(port: int, num_processes: int, deadline: float, timeout: float) -> None:
    dual = socket.has_dualstack_ipv6()  # IPv4 and IPv6 peers, as JAX's service binds [::]:PORT
    try:
        server = socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET,
                                      dualstack_ipv6=dual)
    except OSError as err:
        raise JoinError(f"process 0 cannot listen on port {port} of --coordinator_address "
                        f"({err.strerror or err}): choose a free port.") from None
    peers: dict[int, socket.socket] = {}
    try:
        with server:
            while len(peers) < num_processes - 1:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(set(range(1, num_processes)) - set(peers))
                    raise JoinError(f"process(es) {', '.join(map(str, missing))} of {num_processes} did "
                                    f"not join at port {port} within {timeout:g} s (--join_timeout): start "
                                    f"each with --coordinator_address pointing at this host and port.")
                server.settimeout(remaining)
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    continue
                _admit(connection, peers, num_processes)
            for process_id, connection in peers.items():
                try:
                    connection.sendall(b"go\n")
                except OSError:
                    raise JoinError(f"process {process_id} joined at port {port}, then left before the "
                                    f"job started: start it again.") from None
            for connection in peers.values():  # their close first: no TIME_WAIT on JAX's port here
                connection.settimeout(5)
                try:
                    connection.recv(1)
                except OSError:
                    pass
    finally:
        for connection in peers.values():
            connection.close()


def _admit(connection: socket.socket, peers: dict[int, socket.socket], num_processes: int) -> None:
    """Keeps a connection that greets as a new process of this job; answers others with why not."""
    connection.settimeout(10)
    try:
        words = connection.makefile("r").readline().split()
    except OSError:
        connection.close()
        return
    if len(words) != 3 or words[0] != GREETING or not (words[1] + words[2]).isdigit():
        connection.close()  # not one of ours (a port scanner, a stray client)
        return
    process_id, count = int(words[1]), int(words[2])
    problem = None
    if count != num_processes:
        problem = f"process 0 was started with --num_processes {num_processes}, this one with {count}"
    elif not 0 < process_id < num_processes or process_id in peers:
        problem = f"--process_id {process_id} is out of 1 .. {num_processes - 1} or already taken"
    if problem:
        connection.sendall(f"error {problem}\n".encode())
        connection.close()
        return
    peers[process_id] = connection


def _join_the_meeting(address: str, host: str, port: int, process_id: int, num_processes: int,
                      deadline: float, timeout: float) -> None:
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            connection = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
        except OSError as err:
            last_error = err.strerror or str(err)
            time.sleep(RETRY_SECONDS)
            continue
        with connection:
            connection.sendall(f"{GREETING} {process_id} {num_processes}\n".encode())
            connection.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                answer = connection.makefile("r").readline().strip()
            except TimeoutError:
                raise JoinError(f"process {process_id} reached process 0 at {address}, but not every one of "
                                f"the {num_processes} processes joined within {timeout:g} s "
                                f"(--join_timeout): start the others with the same address.") from None
            except OSError:
                answer = ""
        if answer == "go":
            return
        if answer.startswith("error "):
            raise JoinError(f"process 0 at {address} refused process {process_id}: {answer[6:]}.")
        raise JoinError(f"process 0 at {address} stopped waiting before every process joined (its own "
                        f"output says why).")
    raise JoinError(f"process {process_id} found no process 0 at --coordinator_address {address} within "
                    f"{timeout:g} s ({last_error}): start process 0 with the same address, and check the "
                    f"host, the port and any firewall between the hosts.")
