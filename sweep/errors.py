class UserError(Exception):
    """Bad input from the user: reported as one line, never as a traceback."""
