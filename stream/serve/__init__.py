"""`rnnstream serve`: live streams over WebSocket in the Vosk protocol, a page at `/`, `/metrics`; every
connection a session of one SharedRecognizer (in process or on Ray), so all of them share each batched tick."""
