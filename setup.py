"""koji-messagebus: publish Koji hub events to an AMQP 1.0 message bus."""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    with open(os.path.join(HERE, "koji_messagebus", "__init__.py")) as fh:
        for line in fh:
            if line.startswith("__version__"):
                return line.split('"')[1]
    raise RuntimeError("no version")


class BuildPy(build_py):
    """The package data's messagebus.conf and messagebus-schema.sql are built from conf/ (where
    they live); tests/unit/test_packaging.py keeps the checked-in copies identical."""

    def run(self):
        super().run()
        conf = os.path.join(HERE, "conf")
        if getattr(self, "editable_mode", False) or not os.path.isdir(conf):
            return  # an editable install reads the checked-in package data (kept identical to conf/)
        target = os.path.join(self.build_lib, "koji_messagebus", "data")
        self.mkpath(target)
        for name in ("messagebus.conf", "messagebus-schema.sql"):
            self.copy_file(os.path.join(conf, name), os.path.join(target, name))


setup(
    name="koji-messagebus",
    cmdclass={"build_py": BuildPy},
    version=version(),
    description="Koji hub plugin that publishes hub events to an AMQP 1.0 message bus",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="LGPL-2.1-or-later",
    python_requires=">=3.9",
    packages=find_packages(include=["koji_messagebus", "koji_messagebus.*"]),
    package_data={"koji_messagebus": ["data/*", "schemas/*.json"]},
    # koji is NOT a hard dependency: on a hub it comes from the python3-koji RPM (or the hub's own
    # install), and pip must never replace or shadow it.  `[koji]` is for machines without it.
    install_requires=["python-qpid-proton>=0.37"],
    extras_require={
        "koji": ["koji"],
        "outbox": ["psycopg2-binary"],
        "cli": ["pika", "psycopg2-binary"],
        # validating messages against the shipped JSON Schemas (listen/preview --validate); never the hub
        "schema": ["jsonschema>=4.0"],
        "docs": ["sphinx", "myst-parser"],
        # mypy < 2: mypy 2 refuses python_version = 3.9 (pyproject.toml), the Python of EL9 hubs
        "test": ["koji", "pytest", "pika", "psycopg2-binary", "ruff", "mypy>=1.19,<2", "wheel", "jsonschema>=4.0"],
    },
    entry_points={"console_scripts": ["koji-messagebus = koji_messagebus.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Software Development :: Build Tools",
    ],
)
