import pytest

from app.security import is_local_return_url


@pytest.mark.parametrize("url", ["/", "/orders", "/orders/7?tab=items#top", "/a/b/c", "/%2F%2Fencoded"])
def test_local_paths_are_accepted(url):
    assert is_local_return_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/path\\..\\x",
        "https://evil.example/",
        "http:/evil.example",
        "javascript:alert(1)",
        "evil.example",
        "orders",
        "/\t/evil.example",
        "/\n/evil.example",
        "/ /evil.example",
        "/" + "a" * 2048,
    ],
)
def test_anything_a_browser_could_read_as_another_origin_is_refused(url):
    assert not is_local_return_url(url)
