"""Which admission plugins run: kube-apiserver's --enable-admission-plugins / --disable-admission-plugins."""

from __future__ import annotations

import pytest

from pinnace.apiserver.admission import (
    ALL_ORDERED_PLUGINS,
    DEFAULT_PLUGINS,
    IMPLEMENTED,
    KUBE_DEFAULT_ON,
    default_chain,
    resolve_plugins,
)


def test_defaults_are_kubernetes_defaults_that_pinnace_implements_plus_node_restriction():
    assert resolve_plugins() == DEFAULT_PLUGINS == {
        "NamespaceLifecycle", "LimitRanger", "ServiceAccount", "NodeRestriction", "PodSecurity", "Priority",
        "DefaultTolerationSeconds", "MutatingAdmissionWebhook", "ValidatingAdmissionWebhook", "ResourceQuota",
    }
    assert KUBE_DEFAULT_ON <= set(ALL_ORDERED_PLUGINS) and IMPLEMENTED <= set(ALL_ORDERED_PLUGINS)
    assert "NodeRestriction" not in KUBE_DEFAULT_ON  # kube-apiserver's own default leaves it off
    assert "AlwaysDeny" not in DEFAULT_PLUGINS and "AlwaysAdmit" not in DEFAULT_PLUGINS


def test_enable_and_disable_take_comma_separated_and_repeated_names():
    enabled = resolve_plugins(["AlwaysAdmit"], ["LimitRanger, DefaultTolerationSeconds", "Priority"])
    assert enabled == (DEFAULT_PLUGINS | {"AlwaysAdmit"}) - {"LimitRanger", "DefaultTolerationSeconds", "Priority"}
    assert resolve_plugins("NodeRestriction", "") == DEFAULT_PLUGINS  # already on: no change
    # disabling a plugin pinnace lacks anyway is fine (it is off either way)
    assert resolve_plugins((), ("DefaultStorageClass", "RuntimeClass")) == DEFAULT_PLUGINS


@pytest.mark.parametrize(("enable", "disable", "message"), [
    ("Bogus", "", 'enable-admission-plugins plugin "Bogus" is unknown'),
    ("", "limitranger", 'disable-admission-plugins plugin "limitranger" is unknown'),
    ("LimitRanger", "LimitRanger", "[LimitRanger] in enable-admission-plugins and disable-admission-plugins overlapped"),
    ("AlwaysPullImages", "", "AlwaysPullImages is not implemented by pinnace"),
    ("EventRateLimit,DefaultStorageClass", "", "EventRateLimit, DefaultStorageClass are not implemented by pinnace"),
    ("", "NamespaceLifecycle", 'plugin "NamespaceLifecycle" cannot be disabled in pinnace'),
])
def test_bad_names_are_errors_naming_them(enable, disable, message):
    with pytest.raises(ValueError) as error:
        resolve_plugins(enable, disable)
    assert message in str(error.value)


def test_the_chain_holds_the_enabled_plugins_in_kube_order_and_the_always_on_checks():
    chain = default_chain(None, resolve_plugins("AlwaysDeny", "ResourceQuota,PodSecurity"))
    mutating = [p.name for p in chain.mutating]
    validating = [p.name for p in chain.validating]
    assert mutating == ["CertificateSigningRequestRequester", "LimitRanger", "ServiceAccount", "Priority",
                        "DefaultTolerationSeconds", "MutatingAdmissionWebhook"]
    assert validating == ["RBACEscalation", "NodeRestriction", "ValidatingAdmissionWebhook", "AlwaysDeny"]
    with pytest.raises(ValueError, match="AlwaysPullImages"):
        default_chain(None, {"AlwaysPullImages"})


async def test_always_deny_refuses_with_kube_apiserver_words():
    from pinnace.api.kinds import registry
    from pinnace.apiserver.admission import AdmissionRequest
    from pinnace.apiserver.admission.always import AlwaysDeny
    from pinnace.apiserver.errors import Forbidden

    request = AdmissionRequest("CREATE", registry().by_resource("v1/configmaps"), "default", "x", "",
                               {"metadata": {"name": "x"}}, None, None, False, None)
    with pytest.raises(Forbidden) as refused:
        await AlwaysDeny().admit(request)
    assert refused.value.message == 'configmaps "x" is forbidden: admission control is denying all modifications'
