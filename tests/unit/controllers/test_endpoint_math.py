"""Endpoints and EndpointSlice contents computed from a Service and its pods."""

from pinnace.controllers import endpoint_math as em


def service(target="http", publish=False):
    return {"metadata": {"name": "web", "namespace": "default", "uid": "svc"},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": publish,
                     "ports": [{"name": "web", "port": 80, "targetPort": target}]}}


def pod(name, ip, ready=True, port=8080, deleting=False, phase="Running"):
    meta = {"name": name, "namespace": "default", "uid": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta,
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_ready_and_not_ready_addresses_with_named_ports_per_pod():
    subsets = em.endpoints_subsets(service(), [pod("a", "10.0.0.1"), pod("b", "10.0.0.2", ready=False),
                                               pod("c", "10.0.0.3", port=9090), pod("d", None)])
    assert subsets == [
        {"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "a"},
                        "nodeName": "n1"}],
         "notReadyAddresses": [{"ip": "10.0.0.2", "targetRef": {"kind": "Pod", "namespace": "default", "name": "b",
                                                                "uid": "b"}, "nodeName": "n1"}],
         "ports": [{"port": 8080, "protocol": "TCP", "name": "web"}]},
        {"addresses": [{"ip": "10.0.0.3", "targetRef": {"kind": "Pod", "namespace": "default", "name": "c", "uid": "c"},
                        "nodeName": "n1"}],
         "ports": [{"port": 9090, "protocol": "TCP", "name": "web"}]},
    ]


def test_terminating_and_finished_pods():
    pods = [pod("gone", "10.0.0.1", deleting=True), pod("done", "10.0.0.2", phase="Succeeded")]
    assert em.endpoints_subsets(service(), pods) == []
    assert em.endpoints_subsets(service(publish=True), pods)[0]["addresses"][0]["ip"] == "10.0.0.1"
    desired = em.desired_slice_endpoints(service(), pods)
    (endpoints,) = desired.values()
    assert endpoints["10.0.0.1"]["conditions"] == {"ready": False, "serving": True, "terminating": True}


def test_slices_keep_their_endpoints_and_split_at_100():
    pods = [pod(f"p{i}", f"10.0.{i // 200}.{i % 200}") for i in range(250)]
    desired = em.desired_slice_endpoints(service(), pods)
    updates, creates, deletes = em.plan_slices(desired, [])
    assert not updates and not deletes and sorted(len(c[2]) for c in creates) == [50, 100, 100]
    existing = [{"metadata": {"name": f"s{i}"}, "addressType": "IPv4", "ports": em.slice_ports(c[1]), "endpoints": c[2]}
                for i, c in enumerate(creates)]
    assert em.plan_slices(desired, existing) == ([], [], [])
    # One pod turns not ready: exactly one slice is rewritten.
    pods[7]["status"]["conditions"][0]["status"] = "False"
    updates, creates, deletes = em.plan_slices(em.desired_slice_endpoints(service(), pods), existing)
    assert len(updates) == 1 and not creates and not deletes


def test_numeric_target_port_defaults_to_port():
    svc = service()
    del svc["spec"]["ports"][0]["targetPort"]
    assert em.pod_ports(svc, pod("a", "10.0.0.1")) == (("web", 80, "TCP", None),)
