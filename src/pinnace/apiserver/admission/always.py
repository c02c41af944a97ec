"""AlwaysAdmit and AlwaysDeny: kube-apiserver's two deprecated trivial plugins (off by default).

AlwaysAdmit admits everything (it changes nothing: the chain admits what no plugin refuses);
AlwaysDeny refuses every write with kube-apiserver's message, `<resource> "<name>" is forbidden:
admission control is denying all modifications`.
"""

from __future__ import annotations

from pinnace.apiserver.admission import AdmissionRequest, forbidden


class AlwaysAdmit:
    name = "AlwaysAdmit"
    mutating = False

    def handles(self, request: AdmissionRequest) -> bool:
        return False

    async def admit(self, request: AdmissionRequest) -> None:
        return None


class AlwaysDeny:
    name = "AlwaysDeny"
    mutating = False

    def handles(self, request: AdmissionRequest) -> bool:
        return True

    async def admit(self, request: AdmissionRequest) -> None:
        raise forbidden(request, "admission control is denying all modifications")
