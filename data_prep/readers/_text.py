"""Small text helpers shared by the plain-text readers."""


def is_float(text: str) -> bool:
    """True when `text` parses as a float (header detection)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
