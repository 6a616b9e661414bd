"""A small WSGI application: the article's "Hello world" app, plus a form echo.

Any WSGI application (Flask's `app`, Django's `application`, ...) runs behind
lbaws the same way: see hello.cgi beside this file.
"""

from urllib.parse import parse_qs


def application(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(size).decode("utf-8"))
        lines = [f"{key}={values[0]}" for key, values in sorted(form.items())]
        body = "You posted:\n" + "\n".join(lines) + "\n"
    else:
        name = environ.get("PATH_INFO", "/").strip("/") or "world"
        body = f"Hello {name} from a simple WSGI application!\n"
    data = body.encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]
