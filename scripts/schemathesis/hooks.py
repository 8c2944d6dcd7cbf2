"""Schemathesis hooks for Paz.

A few rules of `ServiceSpec::validate` tie values together in ways JSON Schema cannot state
(the document describes them in prose). Positive test cases are brought in line with them here,
so that a rejection of generated data means a real mismatch between the document and the API.
Negative cases are left alone.
"""

import schemathesis

SPEC_PATHS = ("/v1/services", "/v1/services/{name}")


def _fix_spec(spec):
    deploy = spec.get("deploy")
    if isinstance(deploy, dict) and isinstance(deploy.get("canary_steps"), list):
        # Strictly increasing percentages, ending at 100.
        steps = sorted({int(s) for s in deploy["canary_steps"] if isinstance(s, (int, float)) and 1 <= s < 100})
        deploy["canary_steps"] = steps + [100]
    ports = spec.get("ports")
    if isinstance(ports, list):
        # Port numbers are unique whatever the protocol.
        seen, unique = set(), []
        for port in ports:
            number = port.get("port") if isinstance(port, dict) else None
            if number not in seen:
                seen.add(number)
                unique.append(port)
        spec["ports"] = unique
    volumes = spec.get("volumes")
    if isinstance(volumes, list):
        # Each target is mounted once.
        seen, unique = set(), []
        for volume in volumes:
            target = volume.get("target") if isinstance(volume, dict) else None
            if target not in seen:
                seen.add(target)
                unique.append(volume)
        spec["volumes"] = unique
    domains = spec.get("domains")
    if isinstance(domains, list):
        # `.paz` names services inside Paz.
        spec["domains"] = [d for d in domains if not (d == "paz" or str(d).endswith(".paz"))]


@schemathesis.hook
def before_call(context, case, kwargs):
    # `before_call` sees the cases of every phase (`map_case` misses the coverage phase).
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative:
        return
    operation = case.operation
    if operation.path not in SPEC_PATHS or not isinstance(case.body, dict):
        return
    method = operation.method.upper()
    if method in ("POST", "PUT", "PATCH"):
        _fix_spec(case.body)
    if method == "PUT" and case.path_parameters and "name" in case.path_parameters:
        # A service cannot be renamed: the spec names the service of the path.
        case.body["name"] = case.path_parameters["name"]


@schemathesis.hook
def filter_failure(context, failure, case, response):
    # A rollback to a release that does not exist answers 404 RELEASE_NOT_FOUND; Schemathesis
    # reads a 404 after a create as "the created service is missing" (ST302). The service is
    # there: drop that one reading, keep every other failure.
    if failure.code == "ST302" and response is not None and response.status_code == 404:
        try:
            code = response.json()["error"]["code"]
        except Exception:
            return True
        return code != "RELEASE_NOT_FOUND"
    return True
