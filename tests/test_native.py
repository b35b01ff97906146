def test_import():
    import worldenv._native as n
    assert n.max_threads() >= 1
