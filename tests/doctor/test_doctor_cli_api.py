"""`starchart doctor` / `plan` as a user runs them, and GET /v1/doctor on a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Literal

import httpx
import pytest
from fake_smi import write_fake_nvidia_smi
from pydantic import BaseModel, ConfigDict

from starchart.api.app import create_app
from starchart.models.catalog import Catalog, Entry
from starchart.registry import EMBEDDED_NAME, embedded_gguf

from tests.conftest import LiveServer, free_port

Status = Literal["ok", "warn", "fail"]


class CheckSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    title: str
    status: Status
    detail: str
    fix: str | None


class GpuSchema(BaseModel):
    index: int
    name: str
    memory_total: int
    memory_free: int
    compute_capability: str | None
    bus_id: str | None


class NvidiaSchema(BaseModel):
    gpus: list[GpuSchema]
    driver_version: str | None
    cuda_version: str | None
    source: str | None
    notes: list[str]
    error: str | None


class OptionSchema(BaseModel):
    name: str
    weights: int
    kv_cache: int
    overhead: int
    total: int
    device: Literal["gpu", "cpu"]
    runnable: bool
    fits: bool
    command: str | None
    note: str


class PlanSchema(BaseModel):
    model: dict[str, Any]
    n_ctx: int
    batch: int
    budget: dict[str, Any]
    options: list[OptionSchema]
    best: str | None
    command: str | None


class DoctorSchema(BaseModel):
    """The contract: {"status", "checks": [...]} plus one object per section."""

    status: Status
    checks: list[CheckSchema]
    system: dict[str, Any]
    nvidia: NvidiaSchema
    torch: dict[str, Any]
    bitsandbytes: dict[str, Any]
    llamacpp: dict[str, Any]
    packages: dict[str, dict[str, Any]]
    plan: PlanSchema | None = None


def starchart(*args: str, home: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STARCHART_HOME": home, **extra}
    return subprocess.run([sys.executable, "-m", "starchart", *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


def test_doctor_text_on_this_cpu_machine(tmp_path):
    done = starchart("doctor", home=str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("starchart doctor: ")
    for heading in ("System", "NVIDIA", "PyTorch", "bitsandbytes", "llama.cpp",
                    "Python packages"):
        assert f"\n{heading}\n" in out
    assert "no NVIDIA GPU" in out
    assert f"{sys.executable} -m pip install torch==2.13.0" in out


def test_doctor_json_follows_the_schema(tmp_path):
    done = starchart("doctor", "--json", home=str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = DoctorSchema.model_validate(json.loads(done.stdout))
    assert report.nvidia.gpus == []
    gpu_check = next(c for c in report.checks if c.id == "nvidia.gpus")
    assert gpu_check.status == "ok" and "no NVIDIA GPU" in gpu_check.detail
    assert all(c.fix for c in report.checks if c.status != "ok")
    assert report.status != "fail"
    assert report.plan is None


def test_doctor_with_a_model_adds_the_plan(tmp_path):
    done = starchart("doctor", "--json", "--model", EMBEDDED_NAME, "--n-ctx", "2048",
                     "--batch", "2", home=str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = DoctorSchema.model_validate(json.loads(done.stdout))
    assert report.plan is not None
    assert (report.plan.n_ctx, report.plan.batch, report.plan.best) == (2048, 2, "gguf Q4_1")
    assert report.plan.command == f"starchart serve --model {EMBEDDED_NAME} --n-ctx 2048"
    assert any(c.id == "plan" and c.status == "ok" for c in report.checks)


def test_doctor_on_a_recorded_gpu_machine(tmp_path):
    """A 470 driver (CUDA 11.4) with a T4, as the user's document had, and this
    venv's CPU-only torch: the doctor fails and names the wheel to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fake_nvidia_smi(bin_dir, "470.82.01-1xT4", knows_compute_cap=False)
    env_path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run([sys.executable, "-m", "starchart", "doctor", "--json"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PATH": env_path, "STARCHART_HOME": str(tmp_path)})
    report = DoctorSchema.model_validate(json.loads(done.stdout))
    assert report.nvidia.driver_version == "470.82.01" and report.nvidia.cuda_version == "11.4"
    assert [g.name for g in report.nvidia.gpus] == ["Tesla T4"]
    recommended = (f"{sys.executable} -m pip install torch==2.7.1+cu118 --index-url"
                   " https://download.pytorch.org/whl/cu118")
    assert report.torch["recommended_install"] == recommended
    if report.torch["installed"] and report.torch["cuda"] is None:  # this venv: torch+cpu
        assert done.returncode == 1 and report.status == "fail"
        check = next(c for c in report.checks if c.id == "torch.cuda")
        assert check.status == "fail" and check.fix == recommended


def test_plan_command_prints_the_table(tmp_path):
    done = starchart("plan", EMBEDDED_NAME, home=str(tmp_path))
    assert done.returncode == 0, done.stderr
    for row in ("fp32", "fp16/bf16", "int8", "int4", "gguf Q4_1"):
        assert f"\n  {row} " in done.stdout
    assert "134.5M parameters" in done.stdout
    assert f"run: starchart serve --model {EMBEDDED_NAME} --n-ctx 4096" in done.stdout


def test_plan_of_an_unknown_model_fails_cleanly(tmp_path):
    done = starchart("plan", "no/such-model", home=str(tmp_path), HF_HUB_OFFLINE="1",
                     HF_HOME=str(tmp_path / "hf"))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("starchart: no local model 'no/such-model'")
    assert "`hf download no/such-model config.json`" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_batch_is_refused_by_the_parser(tmp_path):
    done = starchart("plan", EMBEDDED_NAME, "--batch", "0", home=str(tmp_path))
    assert done.returncode == 2 and "must be at least 1" in done.stderr


@pytest.mark.slow
def test_doctor_route(api):
    first = api.get("/v1/doctor")
    assert first.status_code == 200
    report = DoctorSchema.model_validate(first.json())
    assert report.nvidia.gpus == [] and report.plan is None
    # Cached briefly: the same body, not a second run (the RAM figure would move).
    assert api.get("/v1/doctor").json() == first.json()


@pytest.mark.slow
def test_doctor_route_plans_the_served_model(api):
    served = api.get("/v1/models").json()["data"][0]["id"]
    body = api.get("/v1/doctor", params={"model": served, "n_ctx": 1024}).json()
    report = DoctorSchema.model_validate(body)
    assert report.plan is not None and report.plan.n_ctx == 1024
    assert report.plan.best == "gguf Q4_1"


@pytest.mark.slow
def test_doctor_route_errors(api):
    bad = api.get("/v1/doctor", params={"batch": 0})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "batch"
    # Only models this server knows: never a path on the server's disk.
    missing = api.get("/v1/doctor", params={"model": "/etc/passwd"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert missing.json()["error"]["param"] == "model"


@pytest.mark.slow
def test_doctor_route_plans_any_registry_name(api, settings):
    """Any name `doctor --model` takes (`models add` / `models pull` ones too), resolved
    the same way; a name not known is a 404 that names it and lists the known ones."""
    catalog = Catalog(settings.home)
    catalog.put(Entry(name="mine", source=str(embedded_gguf())))
    catalog.put(Entry(name="gone", source=str(settings.home / "deleted.gguf")))
    planned = api.get("/v1/doctor", params={"model": "mine", "n_ctx": 1024})
    assert planned.status_code == 200, planned.text
    plan = DoctorSchema.model_validate(planned.json()).plan
    assert plan is not None and plan.best == "gguf Q4_1"
    assert plan.command == "starchart serve --model mine --n-ctx 1024"  # the name, as typed

    unknown = api.get("/v1/doctor", params={"model": "no-such-model"})
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "'no-such-model'" in error["message"]
    for name in (EMBEDDED_NAME, "mine", "gone"):
        assert name in error["message"], error["message"]
    gone = api.get("/v1/doctor", params={"model": "gone"})
    assert gone.status_code == 404 and "deleted.gguf" in gone.json()["error"]["message"]
    # A name, never a path: not even one to a model file.
    path = api.get("/v1/doctor", params={"model": str(embedded_gguf())})
    assert path.status_code == 404 and path.json()["error"]["code"] == "model_not_found"


@pytest.mark.slow
def test_doctor_route_says_a_remote_model_is_planned_on_its_upstream(settings, engine):
    upstream = f"http://127.0.0.1:{free_port()}"
    remote = settings.model_copy(update={"upstream": [f"far={upstream}"]})
    with LiveServer(create_app(remote, engines=[engine]), free_port(),
                    wait_ready=False) as server:
        answer = httpx.get(server.url + "/v1/doctor", params={"model": "far"}, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "model"
    assert error["message"] == (f"model 'far' runs on its upstream servers ({upstream}),"
                                " not on this machine: plan its memory where it runs")
