import p2prpc
import p2prpc._core


def test_core_imports_from_installed_package():
    assert p2prpc._core.__name__ == "p2prpc._core"
    assert "site-packages" in p2prpc.__file__
