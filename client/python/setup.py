"""Build hooks of the embedserve Python client: build_py generates embedserve/_proto from the
v1 .proto files (embedserve/_gen.py: grpcio-tools' protoc, or the system protoc), and sdist
bundles the .proto files so that an sdist builds on its own. Metadata is in pyproject.toml."""
import importlib.util
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))


def _gen():
    spec = importlib.util.spec_from_file_location(
        "embedserve_gen", os.path.join(HERE, "embedserve", "_gen.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ensure_protos():
    """embedserve/_proto must exist before setuptools looks at the packages (metadata too)."""
    out = os.path.join(HERE, "embedserve", "_proto")
    _gen().generate(out)


class BuildPyWithProtos(build_py):
    def run(self):
        _ensure_protos()  # fresh from the .proto files at every build
        super().run()


class SdistWithProtos(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        gen = _gen()
        src = gen.find_proto_dir()
        for rel in gen.PROTOS:
            dest = os.path.join(base_dir, "proto", rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(os.path.join(src, rel), dest)


if not os.path.isfile(os.path.join(HERE, "embedserve", "_proto", "embed_pb2.py")):
    _ensure_protos()

setup(packages=["embedserve", "embedserve._proto"], package_data={"embedserve": ["py.typed"]},
      cmdclass={"build_py": BuildPyWithProtos, "sdist": SdistWithProtos})
