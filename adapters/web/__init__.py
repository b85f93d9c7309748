"""The dashboard (issue 20): server-rendered pages under /ui/ for people who are not in chat.

jinja2 templates (autoescaped) render every page on the server; a little vanilla JavaScript (static/live.js) makes
pages live over Server-Sent Events, and each page works without it (reload). Nothing is loaded from elsewhere: the
Content-Security-Policy allows only Shepherd's own scripts and styles.

- `ui.py`: the request a page handler gets (who is signed in, the core, the form already CSRF-checked) and the
  route table's shape; `auth.py`: sign-in with an API token, the session cookie, CSRF, sign-out;
- `render.py`: the template environment, its filters and the headers every page carries;
- `app.py`: mounts the pages, the static files and an HTML 404 for the rest of /ui/;
- one module per page family: `overview.py`, `tasks.py`, `approvals.py`, `agents.py`, `sessions.py`.
"""
