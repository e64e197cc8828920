"""Checks the deployment files that CI cannot run (no Docker engine or cluster here): the
compose file and Kubernetes manifests parse, every embedserve flag they pass exists in the
binary's --help, the unix socket lives on a volume every client container mounts, probes use
gRPC health, and the Dockerfiles build with the same install script CI runs.
Usage: deploy_files_test.py EMBEDSERVE_BINARY REPO_ROOT"""
import os
import plistlib
import re
import subprocess
import sys

import yaml

binary, root = sys.argv[1], sys.argv[2]
help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
known_flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def flags_of(args):
    return [a.split("=", 1)[0] for a in args if isinstance(a, str) and a.startswith("--")]


def socket_dir(args):
    for i, a in enumerate(args):
        value = a.split("=", 1)[1] if a.startswith("--listen=") else (
            args[i + 1] if a == "--listen" and i + 1 < len(args) else None)
        if value and value.startswith("unix:"):
            return os.path.dirname(value[len("unix:"):])
    return None


# Compose.
compose = yaml.safe_load(open(os.path.join(root, "docker/docker-compose.yml")))
services = compose["services"]
server = services["embedserve"]
for flag in flags_of(server["command"]):
    check(flag in known_flags, f"compose: embedserve flag {flag} is not in --help")
sock_dir = socket_dir(server["command"])
check(sock_dir is not None, "compose: embedserve listens on no unix socket")
server_mounts = {m.split(":")[1]: m.split(":")[0] for m in server["volumes"]}
volume = server_mounts.get(sock_dir)
check(volume in compose.get("volumes", {}), f"compose: socket dir {sock_dir} is not a named volume")
for name in ("api", "worker"):
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
    check(mounts.get(sock_dir) == volume, f"compose: {name} does not mount the socket volume")
    target = services[name]["environment"]["EMBEDSERVE_TARGET"]
    check(target.startswith("unix:" + sock_dir), f"compose: {name} targets {target}")
check("health" in server["healthcheck"]["test"], "compose: healthcheck is not the health call")
gpu = server["deploy"]["resources"]["reservations"]["devices"][0]
check("gpu" in gpu["capabilities"], "compose: no GPU reservation")
drain = 30
check(int(server["stop_grace_period"].rstrip("s")) > drain, "compose: grace period <= drain")

# Kubernetes.
for manifest in ("sidecar.yaml", "shared-service.yaml"):
    docs = list(yaml.safe_load_all(open(os.path.join(root, "docker/kubernetes", manifest))))
    check(len(docs) >= 1, f"{manifest}: empty")
    for doc in docs:
        check("apiVersion" in doc and "kind" in doc, f"{manifest}: a document lacks apiVersion/kind")
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        check(doc["spec"]["selector"]["matchLabels"].items() <=
              doc["spec"]["template"]["metadata"]["labels"].items(),
              f"{manifest}: selector does not match the pod labels")
        containers = {c["name"]: c for c in spec["containers"]}
        es = containers["embedserve"]
        for flag in flags_of(es["args"]):
            check(flag in known_flags, f"{manifest}: embedserve flag {flag} is not in --help")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            check("grpc" in es.get(probe, {}), f"{manifest}: {probe} is not a gRPC health probe")
        check(spec.get("terminationGracePeriodSeconds", 30) > drain,
              f"{manifest}: grace period <= drain deadline")
        check(es["resources"]["limits"].get("nvidia.com/gpu") == 1, f"{manifest}: no GPU limit")
        sock_dir = socket_dir(es["args"])
        if sock_dir:
            es_mounts = {m["mountPath"]: m["name"] for m in es["volumeMounts"]}
            for name, c in containers.items():
                if name == "embedserve":
                    continue
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                check(mounts.get(sock_dir) == es_mounts.get(sock_dir),
                      f"{manifest}: {name} does not mount the socket volume")
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                check(env.get("EMBEDSERVE_TARGET", "").startswith("unix:" + sock_dir),
                      f"{manifest}: {name} does not target the socket")

# A Mac: the server runs natively (launchd), the clients in Docker reach it over TCP with a
# bearer token.
mac = yaml.safe_load(open(os.path.join(root, "docker/docker-compose.mac.yml")))
check("embedserve" not in mac["services"], "compose (mac): runs an embedserve container")
for name in ("api", "worker"):
    env = mac["services"][name]["environment"]
    check(env["EMBEDSERVE_TARGET"].endswith("host.docker.internal:50051}"),
          f"compose (mac): {name} targets {env['EMBEDSERVE_TARGET']}")
    check(env.get("EMBEDSERVE_TOKEN", "").startswith("${EMBEDSERVE_TOKEN"),
          f"compose (mac): {name} takes no token from the environment")
plist = plistlib.load(open(os.path.join(root, "docker/macos/com.embedserve.server.plist"), "rb"))
args = plist["ProgramArguments"]
check(args[0].endswith("/embedserve"), "plist: does not run the embedserve binary")
for flag in flags_of(args[1:]):
    check(flag in known_flags, f"plist: embedserve flag {flag} is not in --help")
check(args[args.index("--device") + 1] == "mps", "plist: not on the MPS device")
tcp = [args[i + 1] for i, a in enumerate(args) if a == "--listen" and not args[i + 1].startswith("unix:")]
check(tcp and tcp[0].endswith(":50051"), "plist: no TCP listener for the containers")
check("--auth-token-file" in args, "plist: TCP without a bearer token")
plist_drain = int(args[args.index("--drain-timeout-s") + 1])
check(plist["ExitTimeOut"] > plist_drain, "plist: ExitTimeOut <= the drain deadline")

# Dockerfiles build from the packages CI installs: their build stages install the build
# subset of scripts/install-deps (the whole script also fetches test tools from npm), so every
# Debian package they name must be in its list, and the lists cannot drift apart unseen.
deps_text = open(os.path.join(root, "scripts/install-deps")).read()
deps_block = re.search(r"^packages=\((.*?)^\)", deps_text, re.S | re.M).group(1)
ci_packages = {w for line in deps_block.splitlines() for w in line.split("#")[0].split()}
# Fetching tools and CUDA's own repository, which CI does not need.
not_from_ci = {"ca-certificates", "curl", "unzip", "gnupg"}
for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
    text = open(os.path.join(root, "docker", dockerfile)).read()
    build_stage = text.split(" AS build", 1)[1].split("\nFROM ", 1)[0]
    installed = set()
    for command in re.findall(r"apt-get install (.*?)(?:&&|$)", build_stage.replace("\\\n", " "), re.M):
        installed |= {w for w in command.split() if not w.startswith("-")}
    check("build-essential" in installed, f"{dockerfile}: its build stage installs no toolchain")
    for package in sorted(installed - not_from_ci):
        if "${CUDA_TOOLKIT}" in package:
            continue
        check(package in ci_packages,
              f"{dockerfile}: builds with {package}, which scripts/install-deps does not install")
    check(re.search(r"^USER\s+\S+", text, re.M) is not None, f"{dockerfile}: runs as root")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("ok: compose, Kubernetes manifests and Dockerfiles are consistent with the binary")
