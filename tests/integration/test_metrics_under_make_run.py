"""§8: metrics add up across workers when the BFF starts as `make run` starts it, with no
PROMETHEUS_MULTIPROC_DIR given, and the folder gunicorn.conf.py creates for them goes at exit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests


def head_healthz_count(bff_url: str) -> float:
    """`bff_request_duration_seconds_count` for HEAD /healthz 200, as /metrics adds it up."""
    text = requests.get(f"{bff_url}/metrics", timeout=10).text
    labels = r'\{(?=[^}]*route="/healthz")(?=[^}]*method="HEAD")(?=[^}]*status="200")[^}]*\}'
    return sum(float(value) for value in re.findall(rf"^bff_request_duration_seconds_count{labels} (\S+)$", text, re.M))


def histogram_files(metrics_dir: Path) -> dict[str, bytes]:
    """Each process's histogram file by pid; its bytes change with every request it observes."""
    return {path.stem.rsplit("_", 1)[1]: path.read_bytes() for path in metrics_dir.glob("histogram_*.db")}


def test_metrics_count_requests_of_both_workers_under_make_run_and_their_folder_goes_at_exit(
    stack, tmp_path, monkeypatch, make_bff
):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    temp = tmp_path / "tmp"  # the server's temporary folder, so other runs' folders do not count
    temp.mkdir()
    # What dev/run.py gives the BFF (there the upstream is its own sample API)
    bff = make_bff(workers=2, BFF_API_UPSTREAMS=json.dumps({"echo": stack.echo_url}), TMPDIR=str(temp))
    bff_url, service = bff.url, bff.service
    try:
        (metrics_dir,) = temp.glob("bff-metrics-*")
        # HEAD, so start_bff's readiness probes (GET /healthz) are not counted with these; each on
        # a new connection, until both workers have served some.
        start = histogram_files(metrics_dir)
        sent, served = 0, set()
        while (len(served) < 2 or sent < 10) and sent < 300:
            assert requests.head(f"{bff_url}/healthz", timeout=10).status_code == 200
            sent += 1
            served = {pid for pid, data in histogram_files(metrics_dir).items() if start.get(pid) != data}
        assert head_healthz_count(bff_url) == sent
        assert len(served) == 2
    finally:
        service.stop()
    assert list(temp.glob("bff-metrics-*")) == []
