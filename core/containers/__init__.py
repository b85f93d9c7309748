"""Cloud coding containers (the Eliza dialect's "Cloud Coding Containers", shared/seeds/000): a bundle of files
promoted into a workspace (a git repository whose first commit is the snapshot), an agent run on it through the
configured runner (a task), and changes synced in and out — patches applied for real.

bundles.py checks what a client sends (paths, encodings, sizes); promotions.py keeps promoted workspaces.
"""
