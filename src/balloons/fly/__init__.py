"""Fly.io support for balloons: a Machines API client and backend, and a local emulator of the
Machines REST API (:mod:`balloons.fly.emulator`) to test them end to end."""
