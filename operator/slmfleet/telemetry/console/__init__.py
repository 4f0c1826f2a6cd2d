"""The reviewer console: server-rendered HTML (``render``) and its static assets."""
