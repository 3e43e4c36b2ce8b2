"""Runs the collector from its release image the way a container runtime would, without one:
the image unpacked by umoci into a root filesystem, then the entrypoint started inside it with
chroot, as the image's User, in its WorkingDir, with its Env. Only what is in the image is there:
the dynamic loader, the libraries and the CA bundle all come from the rootfs, none from the host.

Needs root (chroot); CI and `make test` run as root here.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

from live_sidecar import NO_PROXY, free_port, tail, wait_until

ADMIN_TOKEN = "release-admin-token"


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM, then up to 25 s for a graceful exit (serve drains for up to 20 s), then SIGKILL."""
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=25)
        except subprocess.TimeoutExpired:
            p.kill()


def umoci_unpack(layout: Path, ref: str, bundle: Path) -> Path:
    run = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{ref}", str(bundle)],
                         capture_output=True, text=True, timeout=120, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"umoci unpack failed: {run.stderr.strip()[-300:]}")
    return bundle / "rootfs"


def user_ids(config: dict) -> tuple[int, int]:
    user = config["config"].get("User", "")
    uid, _, gid = user.partition(":")
    if not uid.isdigit():
        raise ValueError(f"User {user!r} is not numeric (runAsNonRoot needs a numeric uid)")
    return int(uid), int(gid or uid)


def in_image(rootfs: Path, config: dict, args: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
    """The image's entrypoint with `args`, confined to `rootfs`, as its user, in its WorkingDir."""
    uid, gid = user_ids(config)
    workdir = config["config"].get("WorkingDir") or "/"
    image_env = dict(e.split("=", 1) for e in config["config"].get("Env", []))

    def enter():
        os.chroot(rootfs)
        os.chdir(workdir)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return subprocess.Popen(config["config"]["Entrypoint"] + args, env={**image_env, **env},
                            preexec_fn=enter, **popen)  # noqa: PLW1509 - runs before exec only


def version_problems(rootfs: Path, config: dict) -> list[str]:
    p = in_image(rootfs, config, ["--version"], {}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=30)
    text = out.decode(errors="replace").strip()
    if p.returncode != 0:
        return [f"--version exited {p.returncode}: {text[-300:]}"]
    if "meshaudit-collector" not in text:
        return [f"--version printed {text[:200]!r}"]
    return []


def serve_problems(rootfs: Path, config: dict, log: Path) -> list[str]:
    """serve with the default DATABASE_URL (SQLite, relative to WorkingDir) answers /healthz."""
    port = free_port()
    env = {"MESHAUDIT_LISTEN": f"127.0.0.1:{port}", "AUDIT_RECEIVER_API_KEY": "release-api-key",
           "AUDIT_RECEIVER_SIGNING_SECRET": "release-signing", "AUDIT_RECEIVER_EVENT_KEYS": "k1=release-event",
           "MESHAUDIT_ADMIN_TOKEN": ADMIN_TOKEN}
    with open(log, "w", encoding="utf-8") as out:
        p = in_image(rootfs, config, config["config"].get("Cmd", []), env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def healthy():
            with NO_PROXY.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status == 200
        try:
            wait_until(healthy, 30, "the collector from the image did not answer /healthz")
        except TimeoutError as e:
            return [f"{e}; exit code {p.poll()}; log: {tail(log)}"]
        workdir = config["config"].get("WorkingDir") or "/"
        db = rootfs / workdir.lstrip("/") / "meshaudit.db"
        if not db.is_file():
            return [f"no SQLite database at {workdir}/meshaudit.db inside the image's root"]
        if db.stat().st_uid != user_ids(config)[0]:
            return ["the database is not owned by the image's user"]
        return []
    finally:
        stop([p])


def start_collector(rootfs: Path, config: dict, log: Path, port: int, event_keys: str,
                    api_key: str, signing: str) -> subprocess.Popen:
    env = {"MESHAUDIT_LISTEN": f"127.0.0.1:{port}", "AUDIT_RECEIVER_API_KEY": api_key,
           "AUDIT_RECEIVER_SIGNING_SECRET": signing, "AUDIT_RECEIVER_EVENT_KEYS": event_keys,
           "MESHAUDIT_ADMIN_TOKEN": ADMIN_TOKEN, "DATABASE_URL": "sqlite:///tmp/live.db"}
    with open(log, "w", encoding="utf-8") as out:
        return in_image(rootfs, config, ["serve"], env, stdout=out, stderr=subprocess.STDOUT)


def get_json(port: int, path: str):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with NO_PROXY.open(req, timeout=5) as r:
        return json.loads(r.read())
