"""RFC 7386 merge patch (kubectl label/annotate/scale, patch --type=merge), with property tests."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pinnace.api.patch import create_merge_patch, merge_patch


def test_merge_patch_merges_maps_and_deletes_nulls():
    obj = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}}
    result = merge_patch(obj, {"metadata": {"labels": {"b": None, "c": "3"}}, "spec": {"replicas": 3}})
    assert result == {"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"replicas": 3}}
    assert obj["metadata"]["labels"] == {"a": "1", "b": "2"}


def test_merge_patch_replaces_lists_wholesale():
    obj = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}
    result = merge_patch(obj, {"spec": {"containers": [{"name": "b", "image": "z"}]}})
    assert result["spec"]["containers"] == [{"name": "b", "image": "z"}]


def test_merge_patch_rfc7386_examples():
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}
    assert merge_patch({"a": "foo"}, "bar") == "bar"


scalars = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans())
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text("abc", max_size=2), children, max_size=3)
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.text("abcd", max_size=2), json_values, max_size=4)


@settings(max_examples=200, deadline=None)
@given(documents, documents)
def test_created_merge_patch_turns_original_into_modified(original, modified):
    patch = create_merge_patch(original, modified)
    assert merge_patch(original, patch) == modified


@settings(max_examples=200, deadline=None)
@given(documents, documents)
def test_merge_patch_is_idempotent(original, patch):
    once = merge_patch(original, patch)
    assert merge_patch(once, patch) == once


@settings(max_examples=100, deadline=None)
@given(documents)
def test_empty_merge_patch_changes_nothing(original):
    assert merge_patch(original, {}) == original


patch_documents = st.dictionaries(
    st.text("abcd", min_size=1, max_size=2),
    st.one_of(st.none(), json_values),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(documents, patch_documents)
def test_strategic_merge_without_schema_behaves_like_merge_patch(original, patch):
    # With no list strategies known, a strategic merge patch is a JSON merge patch.
    from pinnace.api import schemas
    from pinnace.api.patch import strategic_merge_patch

    assert strategic_merge_patch(original, patch, schemas.EMPTY) == merge_patch(original, patch)
