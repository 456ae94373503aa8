"""Running the consumer recipes of docs/recipes/ as a reader would: each as its own process,
settings from the environment (KOJI_BUS_*), its JSON lines on stdout, `subscribed:` on stderr."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest
from proton import Described, symbol
from proton.handlers import MessagingHandler
from proton.reactor import Container, DurableSubscription, Filter, LinkOption

from devkit.brokers import BrokerTarget

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = os.path.join(ROOT, "docs", "recipes")
RHEA_VERSION = "3"


def recipe_env(t: BrokerTarget, exchange: str, queue: str, count: int = 0, **extra: str) -> dict[str, str]:
    env = dict(os.environ, KOJI_BUS_HOST=t.host, KOJI_BUS_PORT=str(t.port), KOJI_BUS_USER=t.user,
               KOJI_BUS_PASSWORD=t.password, KOJI_BUS_EXCHANGE=exchange, KOJI_BUS_QUEUE=queue,
               KOJI_BUS_COUNT=str(count), PYTHONPATH=ROOT)
    env.update(extra)
    return env


def command(recipe: str, node_path: str | None = None) -> list[str]:
    path = os.path.join(RECIPES, recipe)
    return ["node", path] if recipe.endswith(".js") else [sys.executable, path]


@dataclass
class Run:
    """One run of a recipe: its process and what it printed so far."""

    proc: subprocess.Popen
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    def wait_subscribed(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.proc.poll() is None:
            if any(line.startswith("subscribed:") for line in self.err):
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"the recipe did not subscribe within {seconds:g}s: {''.join(self.err)}")

    def finish(self, seconds: float = 60) -> int:
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the recipe did not finish within {seconds:g}s; printed {len(self.out)} "
                                 f"line(s); stderr: {''.join(self.err)}") from None

    def kill(self) -> None:
        """Like a crash: the connection drops without detaching the link."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def start(recipe: str, env: dict[str, str], cwd: str | None = None) -> Run:
    proc = subprocess.Popen(command(recipe), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)
    run = Run(proc)
    threading.Thread(target=lambda: run.out.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    threading.Thread(target=lambda: run.err.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    return run


def rhea_dir(base: str) -> str:
    """rhea installed from the npm registry into a directory of its own; NODE_PATH for the recipes."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are needed for the rhea recipe")
    os.makedirs(base, exist_ok=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", base, f"rhea@{RHEA_VERSION}"],
                   check=True, timeout=300, capture_output=True)
    return os.path.join(base, "node_modules")


class _Topic(LinkOption):
    def apply(self, link):
        link.source.capabilities.put_object(symbol("topic"))


class _Unsubscribe(MessagingHandler):
    def __init__(self, t: BrokerTarget, address: str, name: str, options: list):
        super().__init__(prefetch=0)
        self.t, self.address, self.name, self.options = t, address, name, options
        self.done = False

    def on_start(self, event):
        conn = event.container.connect(self.t.url, user=self.t.user, password=self.t.password,
                                       allowed_mechs="PLAIN", allow_insecure_mechs=True)
        event.container.create_receiver(conn, self.address, name=self.name, options=self.options)

    def on_link_opened(self, event):
        event.receiver.close()  # a closing detach: the broker deletes the durable subscription

    def on_link_closed(self, event):
        self.done = True
        event.connection.close()


def unsubscribe(t: BrokerTarget, name: str, address: str, binding: str | None = None, link: str | None = None) -> None:
    """Remove a durable subscription on Artemis or Broker-J: container id `name`, link `link` (default
    `name`, as the recipes do; `listen --queue NAME --durable` names its first link NAME-0)."""
    options: list = [DurableSubscription()]
    if binding is None:
        options.append(_Topic())
    else:
        options.append(Filter({symbol("binding"): Described(symbol("apache.org:legacy-amqp-topic-binding:string"),
                                                            binding)}))
    handler = _Unsubscribe(t, address, link or name, options)
    container = Container(handler)
    container.container_id = name
    container.timeout = 10
    container.run()
