"""Workers joining within a second are one line in the engine's log, a worker joining alone one of its own: a fleet of
600 started logged 600 "worker ... ready" lines, and an engine restarted with 1,000 workers connected 1,000."""

import logging
import signal

import msgspec
from dispatcher_harness import Harness
from test_loss_lines import link_over
from test_sim_fleet import start_fleet
from test_worker_hello import HELLO, IDENTITY
from waiting import wait_for

from engine.logs.join_lines import say_joins
from engine_process import free_port, start_engine, start_worker


def join_lines(engine) -> list[str]:
    """What the engine's lines of workers that joined say."""
    lines = engine.log_path.read_text().splitlines()
    said = [line.partition("]: ")[2] for line in lines if "argus.workers" in line]
    return [line for line in said if " ready: " in line or " joined together: " in line]


def test_a_fleet_joins_in_one_line_as_it_starts_and_as_its_engine_restarts_and_a_worker_alone_in_its_own(tmp_path):
    worker_port = free_port()
    engine = start_engine(tmp_path, workers=0, backend="sim", worker_port=worker_port, wait=False)
    fleet = start_fleet(tmp_path, engine.worker_address, 50, "fleet")
    lone = None
    second = None
    try:
        engine.wait_ready(50, timeout_s=120)
        assert wait_for(lambda: join_lines(engine), timeout_s=30)
        lone = start_worker(engine.worker_address, "sim", "--time-scale", "0.1", "--worker-id", "lone")
        assert wait_for(lambda: any("lone/" in line for line in join_lines(engine)), timeout_s=60)
        fleet_lines, lone_line = join_lines(engine)[:-1], join_lines(engine)[-1]
        # within a second of the first, the hellos of a fleet in one process: one line, or two if a window cut it
        assert 1 <= len(fleet_lines) <= 2, fleet_lines
        assert sum(int(line.split()[0]) for line in fleet_lines) == 50, fleet_lines
        assert fleet_lines[0].endswith(" more"), fleet_lines
        for line in fleet_lines:
            assert "joined together: sim sim:" in line and f"on no device, pid {fleet.pid} (SIMULATED): fleet-" in line
        assert lone_line.startswith("worker lone/") and f"on no device, pid {lone.pid} (SIMULATED)" in lone_line

        engine.process.send_signal(signal.SIGKILL)
        engine.process.wait()
        second = start_engine(tmp_path, workers=0, backend="sim", worker_port=worker_port, wait=False)
        second.wait_ready(51, timeout_s=120)
        second.stop()
        # each worker says hello again at its next beat, within a heartbeat interval (1 s): a line each made 51
        said = join_lines(second)
        assert 1 <= len(said) <= 3, said
        assert sum(1 if line.startswith("worker ") else int(line.split()[0]) for line in said) == 51, said
        assert any(", pids " in line for line in said), said  # the fleet's and the lone worker's, in one line
    finally:
        engine.stop()
        if second is not None:
            second.stop()
        for worker in (fleet, lone):
            if worker is not None and worker.poll() is None:
                worker.kill()
                worker.wait()


def test_workers_of_different_devices_and_processes_are_said_so(caplog):
    caplog.set_level(logging.INFO)
    h = Harness()
    workers = [h.add_worker(f"gpu-{i}/{i:08x}") for i in range(8)]
    for i, worker in enumerate(workers):
        # two GPUs each in two processes
        worker.hello = msgspec.structs.replace(worker.hello, device=f"cuda:{i % 2}", pid=100 + i // 4, simulated=False)
    say_joins(workers)
    (said,) = [r.getMessage() for r in caplog.records if r.name == "argus.workers"]
    assert said == (
        "8 workers joined together: sim sim:0 on cuda:0, cuda:1, pids 100, 101: gpu-0/00000000,"
        " gpu-1/00000001, gpu-2/00000002, gpu-3/00000003, gpu-4/00000004 and 3 more"
    )


async def test_a_worker_lost_as_it_joins_is_said_ready_before_it_is_said_lost(tmp_path, caplog):
    """Its join waits for the window's end; its loss is said at once, and read first it left the operator a worker lost
    that had never joined."""
    caplog.set_level(logging.INFO)
    h = Harness()
    link = link_over(h, tmp_path)
    link.send = lambda worker, message: True
    try:
        link._on_message(IDENTITY, HELLO)
        h.dispatcher.worker_lost(h.registry.get(IDENTITY), "exited")
        said = [r.getMessage() for r in caplog.records if r.name in ("argus.workers", "argus.dispatcher")]
        assert said[1:] == [
            "worker remote-0/abcd ready: sim sim:0 on no device, pid 123 (SIMULATED)",
            "worker remote-0/abcd lost (exited) holding 0 images",
        ]
    finally:
        link.close()
