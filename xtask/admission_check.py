"""The sandbox admission policy's rules, evaluated (run by `cargo xtask manifests`).

deploy/kubernetes/sandbox-admission.yaml holds pods of enforced namespaces to its CEL
validations. The API server checks them only when the policy is created, so here each is
evaluated with cel-python against the example sandbox pod, which every rule must admit,
and against copies of it that each break one rule, which some rule must refuse. The API
server's CEL is typed and this one is not: this proves the rules' logic, not that the
API server accepts their types.

Usage: admission_check.py POLICY.yaml POD.yaml; exits 1 naming the first wrong verdict.
"""

import copy
import sys

import celpy
import yaml


def programs(policy_path):
    policy = next(d for d in yaml.safe_load_all(open(policy_path)) if d["kind"] == "ValidatingAdmissionPolicy")
    env = celpy.Environment()
    return [(v["message"], env.program(env.compile(v["expression"]))) for v in policy["spec"]["validations"]]


def refusals(progs, pod):
    activation = {"object": celpy.json_to_cel(pod)}
    return [message for message, program in progs if not bool(program.evaluate(activation))]


def container(pod):
    return pod["spec"]["containers"][0]


# Each breaks one thing the policy exists to refuse.
BROKEN = {
    "a hostPath other than its policy's socket folder": lambda p: p["spec"]["volumes"].append(
        {"name": "root", "hostPath": {"path": "/"}}
    ),
    "the main broker socket's folder": lambda p: p["spec"]["volumes"][0]["hostPath"].update(path="/run/hb"),
    "another policy's socket folder": lambda p: p["spec"]["volumes"][0]["hostPath"].update(
        path="/run/hb/policies/other"
    ),
    "a policy annotation that climbs out": lambda p: (
        p["metadata"]["annotations"].update({"hb.dev/policy": ".."}),
        p["spec"]["volumes"][0]["hostPath"].update(path="/run/hb/policies/.."),
    ),
    "no policy annotation": lambda p: p["metadata"]["annotations"].pop("hb.dev/policy"),
    "/run/hb mounted writable": lambda p: container(p)["volumeMounts"][0].update(readOnly=False),
    "hostNetwork": lambda p: p["spec"].update(hostNetwork=True),
    "hostPID": lambda p: p["spec"].update(hostPID=True),
    "a privileged container": lambda p: container(p)["securityContext"].update(privileged=True),
    "privilege escalation": lambda p: container(p)["securityContext"].update(allowPrivilegeEscalation=True),
    "an added NET_ADMIN": lambda p: container(p)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
    "no capability drop": lambda p: container(p)["securityContext"].pop("capabilities"),
    "no runAsNonRoot": lambda p: p["spec"]["securityContext"].pop("runAsNonRoot"),
    "a container without securityContext": lambda p: container(p).pop("securityContext"),
    "a root init container": lambda p: p["spec"].update(
        initContainers=[
            {
                "name": "init",
                "image": "x",
                "securityContext": {
                    "runAsNonRoot": False,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ]
    ),
    "a hostPort": lambda p: container(p).update(ports=[{"containerPort": 80, "hostPort": 80}]),
    "the runtime's default seccomp profile": lambda p: p["spec"]["securityContext"].update(
        seccompProfile={"type": "RuntimeDefault"}
    ),
    "a container unconfined under the pod's hb.json": lambda p: container(p)["securityContext"].update(
        seccompProfile={"type": "Unconfined"}
    ),
    "another Localhost profile": lambda p: p["spec"]["securityContext"].update(
        seccompProfile={"type": "Localhost", "localhostProfile": "other.json"}
    ),
    "an init container outside hb's profile": lambda p: p["spec"].update(
        initContainers=[
            {
                "name": "init",
                "image": "x",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ]
    ),
    "a privileged debug container": lambda p: p["spec"].update(
        ephemeralContainers=[{"name": "debug", "image": "x", "securityContext": {"privileged": True}}]
    ),
}


def main():
    policy_path, pod_path = sys.argv[1:3]
    progs = programs(policy_path)
    pod = yaml.safe_load(open(pod_path))
    refused = refusals(progs, pod)
    if refused:
        sys.exit(f"admission: the example pod {pod_path} is refused: {refused}")
    for what, breaks in BROKEN.items():
        broken = copy.deepcopy(pod)
        breaks(broken)
        if not refusals(progs, broken):
            sys.exit(f"admission: a sandbox pod with {what} is admitted by {policy_path}")
    print(f"admission: the example pod is admitted; {len(BROKEN)} broken copies are each refused")


main()
