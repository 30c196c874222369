import numpy as np
import pytest

from unlearnrec.data.interactions import Interactions
from unlearnrec.data.requests import read_edges_file, sample_edges, sample_users, write_edges_file
from unlearnrec.errors import RequestError
from unlearnrec.unlearn.base import Request


def test_sample_edges_fraction_and_subset(tiny):
    e = sample_edges(tiny, 0.1, np.random.default_rng(0))
    assert len(e) == round(0.1 * len(tiny))
    assert tiny.intersects(e) == len(e)
    assert sample_edges(tiny, 0.1, np.random.default_rng(0)).fingerprint() == e.fingerprint()
    with pytest.raises(RequestError, match="ratio"):
        sample_edges(tiny, 1.5, np.random.default_rng(0))


def test_sample_users(tiny):
    u = sample_users(tiny, 5, np.random.default_rng(1))
    assert len(set(u.tolist())) == 5 and (tiny.user_degrees()[u] > 0).all()


def test_edges_file_roundtrip(tmp_path, tiny):
    e = tiny.subset(np.arange(7))
    write_edges_file(e, tmp_path / "r.tsv")
    u, i = read_edges_file(tmp_path / "r.tsv")
    assert Interactions(u, i, tiny.num_users, tiny.num_items).fingerprint() == e.fingerprint()


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty request file"),
        ("# only a comment\n", "empty request file"),
        ("1 2 3\n", ":1: expected 'user item'"),
        ("user,item\n1,x\n", ":2: ids must be integers"),
    ],
)
def test_bad_edges_files(tmp_path, text, message):
    p = tmp_path / "r.txt"
    p.write_text(text)
    with pytest.raises(RequestError, match=message):
        read_edges_file(p)


def test_request_validation(tiny):
    u, i = tiny.users[:3], tiny.items[:3]
    assert len(Request.of_edges(tiny, u, i)) == 3
    with pytest.raises(RequestError, match="empty request"):
        Request.of_edges(tiny, [], [])
    with pytest.raises(RequestError, match="duplicate edge"):
        Request.of_edges(tiny, [u[0], u[0]], [i[0], i[0]])
    with pytest.raises(RequestError, match="unknown user id 999"):
        Request.of_edges(tiny, [999], [0])
    with pytest.raises(RequestError, match="unknown item id -1"):
        Request.of_items(tiny, [-1])
    with pytest.raises(RequestError, match="duplicate user id"):
        Request.of_users(tiny, [1, 1])
    absent = np.flatnonzero(~tiny.contains(np.zeros(tiny.num_items, int), np.arange(tiny.num_items)))[0]
    with pytest.raises(RequestError, match="not in the training set"):
        Request.of_edges(tiny, [0], [absent])


def test_whole_user_request_holds_all_its_edges(tiny):
    r = Request.of_users(tiny, [2, 5])
    assert len(r) == int(tiny.user_degrees()[[2, 5]].sum())
    assert set(r.edges.users.tolist()) == {2, 5}
    m = r.merge(Request.of_items(tiny, [0]))
    assert set(m.items.tolist()) == {0} and set(m.users.tolist()) == {2, 5}
    assert len(m) == len(r.edges.union(tiny.of_items([0])))
