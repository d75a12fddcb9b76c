"""The operatord image, built and run the way the chart's Deployment runs it, with podman or docker.

Guarantees:
- `find_engine()` returns the engine that works here: docker when its daemon answers, else
  podman; `engine_or_skip()` skips a test without one, and fails it under ``CI=true``.
- `build_image()` builds through `.ci/build-image` (what `make image` runs), so the test builds
  the image exactly as a user does.
- `Container` turns a rendered Deployment into one `run`: the container's ``command``/``args``,
  ``env`` (``fieldRef`` to the pod's name and namespace), every volume (a ``configMap`` becomes
  a read-only directory holding the rendered ConfigMap's data, an ``emptyDir`` a tmpfs of its
  ``sizeLimit``), the pod and container securityContext (uid and gid, fsGroup, runAsNonRoot,
  readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation, the RuntimeDefault seccomp
  profile), the memory and CPU limits, and the pod name as the hostname. A field of the pod
  spec it does not model raises `Unmodeled`, so a chart change cannot go untested unnoticed.
- Two substitutions, both because the pod runs next to the embedded API server rather than in
  a cluster: the service-account token is replaced by a kubeconfig for the embedded server
  (mounted read-only, named by ``KUBECONFIG``; in-cluster config is HTTPS-only and the embedded
  server speaks plain HTTP), and the pod network by the host's (``--network=host``), so two
  containers need different ports (render the chart once per container with its own
  ``config.metrics.port`` and ``config.health.port``).
- Engine-only settings a pod does not have: podman runs with runc and the cgroupfs manager
  (crun refuses hybrid cgroup hierarchies), and the container's open-files and process limits
  are capped at the host's (raising them needs CAP_SYS_RESOURCE).
- `stop()` does what the kubelet does: SIGTERM, SIGKILL after terminationGracePeriodSeconds.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / ".ci" / "build-image"
KUBECONFIG_MOUNT = "/var/run/secrets/operatord-test/kubeconfig"
NOFILE, NPROC = 16384, 4096


class Unmodeled(AssertionError):
    """The rendered pod spec has a field this runner does not turn into an engine flag."""


@dataclass(frozen=True)
class Engine:
    name: str  # "podman" or "docker"

    def argv(self, *args: str) -> list[str]:
        if self.name == "podman":
            runtime = ["--runtime", "runc"] if shutil.which("runc") else []
            return ["podman", *runtime, "--cgroup-manager", "cgroupfs", *args]
        return [self.name, *args]

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(self.argv(*args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return proc

    def ulimits(self) -> list[str]:
        """Open-files and process limits for `run`, no higher than this process's own."""
        out = []
        for name, cap in (("NOFILE", NOFILE), ("NPROC", NPROC)):
            soft, hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))
            value = min(cap, *(v for v in (soft, hard) if v != resource.RLIM_INFINITY))
            out += ["--ulimit", f"{name.lower()}={value}:{value}"]
        return out

    def image_size(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).stdout)


def find_engine() -> Engine | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return Engine("docker")
    if shutil.which("podman"):
        return Engine("podman")
    return None


def engine_or_skip() -> Engine:
    engine = find_engine()
    if engine is not None:
        return engine
    if os.environ.get("CI"):
        pytest.fail("no container engine (docker or podman); `make tools` installs podman as root")
    pytest.skip("no container engine (docker or podman); `make tools` installs podman as root")


def build_image(
    engine: Engine, tag: str, *, context: Path = REPO, build_args: dict[str, str] | None = None
) -> str:
    """Build ``context`` (the repository, or a derived image's directory) as ``tag``."""
    env = {**os.environ, "IMAGE": tag, "ENGINE": engine.name}
    if context != REPO:
        env["CONTEXT"] = str(context)
    extra = [f"--build-arg={k}={v}" for k, v in (build_args or {}).items()]
    proc = subprocess.run(
        [str(BUILD_SCRIPT), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"building {tag} failed:\n{proc.stderr[-5000:]}")
    return tag


_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def quantity_bytes(value: str | int) -> int:
    """A Kubernetes quantity of bytes ("64Mi", "1G", 1024) as an int."""
    m = re.fullmatch(r"(\d+)([kMG]i?|)", str(value))
    if not m:
        raise Unmodeled(f"quantity {value!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _cpus(value: str | int | float) -> str:
    text = str(value)
    return str(int(text[:-1]) / 1000) if text.endswith("m") else text


def _write_tree(directory: Path, files: dict[str, str]) -> Path:
    """Files readable by any uid, as a ConfigMap volume's are."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for name, content in files.items():
        path = directory / name
        path.write_text(content)
        path.chmod(0o644)
    return directory


class Container:
    """One pod of a rendered Deployment, run as a container named ``pod_name``."""

    def __init__(
        self,
        engine: Engine,
        objects: list[dict],
        *,
        kubeconfig: str,
        workdir: Path,
        pod_name: str,
        namespace: str,
    ) -> None:
        self.engine = engine
        self.name = pod_name
        self.namespace = namespace
        self.dir = workdir / pod_name
        self.dir.mkdir(parents=True, exist_ok=True)
        (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
        self.configmaps = {
            o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"
        }
        self.pod = deployment["spec"]["template"]["spec"]
        (self.spec,) = self.pod["containers"]
        self.image = self.spec["image"]
        self.grace = int(self.pod.get("terminationGracePeriodSeconds", 30))
        ports = {p["name"]: p["containerPort"] for p in self.spec.get("ports", [])}
        self.health_port, self.metrics_port = ports["health"], ports["metrics"]
        shutil.copy(kubeconfig, self.dir / "kubeconfig")
        (self.dir / "kubeconfig").chmod(0o644)
        self.argv = self._run_argv()
        self.started_at = 0.0

    # ---- pod spec -> engine flags ---------------------------------------------------------

    def _run_argv(self) -> list[str]:
        pod, spec = self.pod, self.spec
        allowed_pod = {
            "serviceAccountName",
            "automountServiceAccountToken",
            "enableServiceLinks",
            "terminationGracePeriodSeconds",
            "securityContext",
            "containers",
            "volumes",
            "affinity",
        }
        for key in pod:
            if key not in allowed_pod:
                raise Unmodeled(f"pod spec field {key!r}")
        allowed_container = {
            "name",
            "image",
            "imagePullPolicy",
            "command",
            "args",
            "env",
            "ports",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "securityContext",
            "resources",
            "volumeMounts",
        }
        for key in spec:
            if key not in allowed_container:
                raise Unmodeled(f"container field {key!r}")
        argv = [
            "run",
            "--detach",
            "--pull=never",
            "--name",
            self.name,
            "--hostname",
            self.name,
            "--network=host",
            "--log-driver",
            "k8s-file" if self.engine.name == "podman" else "json-file",
            *self._limits(),
            *self._security(),
            *self._env(),
            *self._volumes(),
            "--volume",
            f"{self.dir / 'kubeconfig'}:{KUBECONFIG_MOUNT}:ro",
            "--env",
            f"KUBECONFIG={KUBECONFIG_MOUNT}",
        ]
        if spec.get("command"):
            argv += ["--entrypoint", spec["command"][0]]
            return [*argv, self.image, *spec["command"][1:], *spec.get("args", [])]
        return [*argv, self.image, *spec.get("args", [])]

    def _limits(self) -> list[str]:
        out = self.engine.ulimits()
        limits = (self.spec.get("resources") or {}).get("limits") or {}
        for key in limits:
            if key not in ("memory", "cpu"):
                raise Unmodeled(f"resource limit {key!r}")
        if "memory" in limits:
            out += ["--memory", str(quantity_bytes(limits["memory"]))]
        if "cpu" in limits:
            out += ["--cpus", _cpus(limits["cpu"])]
        return out

    def _security(self) -> list[str]:
        pod_sc = dict(self.pod.get("securityContext") or {})
        fs_group = pod_sc.pop("fsGroup", None)
        sc = {**pod_sc, **(self.spec.get("securityContext") or {})}
        out = []
        uid, gid = sc.pop("runAsUser", None), sc.pop("runAsGroup", None)
        # The kubelet refuses to start a container that would run as uid 0; without runAsUser
        # the image's user decides, checked in start().
        non_root = bool(sc.pop("runAsNonRoot", False))
        if non_root and uid is not None:
            assert int(uid) != 0, "runAsNonRoot with runAsUser 0"
        self.check_image_user = non_root and uid is None
        if uid is not None:
            out += ["--user", f"{uid}:{gid if gid is not None else uid}"]
        if fs_group is not None:
            out += ["--group-add", str(fs_group)]
        if sc.pop("readOnlyRootFilesystem", False):
            out.append("--read-only")
            if self.engine.name == "podman":
                out.append("--read-only-tmpfs=false")  # only the volumes the pod declares
        if sc.pop("allowPrivilegeEscalation", True) is False:
            out += ["--security-opt", "no-new-privileges"]
        caps = sc.pop("capabilities", None) or {}
        out += [f"--cap-drop={c}" for c in caps.pop("drop", [])]
        out += [f"--cap-add={c}" for c in caps.pop("add", [])]
        if caps:
            raise Unmodeled(f"capabilities {caps}")
        seccomp = sc.pop("seccompProfile", None)
        if seccomp not in (None, {"type": "RuntimeDefault"}):
            raise Unmodeled(f"seccompProfile {seccomp}")  # the engine's default profile is used
        if sc:
            raise Unmodeled(f"securityContext {sc}")
        return out

    def _env(self) -> list[str]:
        out = []
        fields = {"metadata.namespace": self.namespace, "metadata.name": self.name}
        for entry in self.spec.get("env") or []:
            if "value" in entry:
                value = str(entry["value"])
            else:
                path = (entry.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
                if path not in fields:
                    raise Unmodeled(f"env {entry}")
                value = fields[path]
            out += ["--env", f"{entry['name']}={value}"]
        return out

    def _volumes(self) -> list[str]:
        volumes = {v["name"]: v for v in self.pod.get("volumes") or []}
        out = []
        for mount in self.spec.get("volumeMounts") or []:
            volume = dict(volumes[mount["name"]])
            volume.pop("name")
            target = mount["mountPath"]
            if set(mount) - {"name", "mountPath", "readOnly"}:
                raise Unmodeled(f"volumeMount {mount}")
            if "configMap" in volume and set(volume["configMap"]) == {"name"}:
                data = self.configmaps[volume["configMap"]["name"]]
                source = _write_tree(self.dir / f"volume-{mount['name']}", data)
                mode = "ro" if mount.get("readOnly") else "rw"
                out += ["--volume", f"{source}:{target}:{mode}"]
            elif "emptyDir" in volume:
                empty = volume["emptyDir"]
                if set(empty) - {"medium", "sizeLimit"} or empty.get("medium") != "Memory":
                    raise Unmodeled(f"emptyDir {empty}")
                size = quantity_bytes(empty["sizeLimit"])
                out += ["--tmpfs", f"{target}:rw,size={size},mode=0777"]
            else:
                raise Unmodeled(f"volume {volume}")
        return out

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Container:
        if self.check_image_user:
            user = self.engine.run("image", "inspect", "--format", "{{.Config.User}}", self.image)
            assert user.stdout.strip().split(":")[0] not in ("", "0", "root"), "runs as root"
        self.engine.run("rm", "--force", self.name, check=False)
        self.started_at = time.monotonic()
        self.engine.run(*self.argv)
        return self

    def get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def state(self) -> dict:
        out = self.engine.run("inspect", "--format", "{{json .State}}", self.name).stdout
        return json.loads(out)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from `start()` until /readyz answered 200; fails at once if it exited."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get(self.health_port, "/readyz")[0] == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            state = self.state()
            if not state.get("Running"):
                raise AssertionError(
                    f"{self.name} exited with {state.get('ExitCode')}:\n{self.logs()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.1)

    def metric(self, name: str, /, **labels: str) -> float:
        """Sum of the samples of ``name`` matching ``labels`` in a fresh scrape of /metrics;
        KeyError when no sample has that name."""
        from prometheus_client.parser import text_string_to_metric_families

        status, body = self.get(self.metrics_port, "/metrics")
        assert status == 200, body
        values = [
            sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]
        if not values and f"\n{name}" not in f"\n{body}":
            raise KeyError(name)
        return sum(values)

    def memory(self) -> dict[str, float]:
        """RSS and PSS (MiB) summed over the container's processes, read from the host."""
        pid = self.state()["Pid"]
        pids, todo = [], [pid]
        while todo:
            p = todo.pop()
            pids.append(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        totals = {"rss_mb": 0.0, "pss_mb": 0.0, "processes": float(len(pids))}
        for p in pids:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    totals[f"{key.lower()}_mb"] += int(rest.split()[0]) / 1024
        return totals

    def logs(self) -> str:
        proc = self.engine.run("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def stop(self) -> tuple[int, float]:
        """SIGTERM, SIGKILL after terminationGracePeriodSeconds, as the kubelet does:
        (exit code, seconds until it exited)."""
        started = time.monotonic()
        self.engine.run("stop", "--time", str(self.grace), self.name, timeout=self.grace + 60)
        elapsed = time.monotonic() - started
        return int(self.state()["ExitCode"]), elapsed

    def kill(self) -> None:
        """SIGKILL, as a node failure would."""
        self.engine.run("kill", "--signal", "KILL", self.name)

    def remove(self) -> None:
        self.engine.run("rm", "--force", self.name, check=False)
