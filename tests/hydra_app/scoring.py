"""A module beside the app: the workers must import it as the app does (the app's directory is shipped)."""


def score(lr: float, batch_size: int) -> float:
    return round(lr * batch_size, 10)
