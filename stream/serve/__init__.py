"""`rnnstream serve`: live streams over WebSocket in the Vosk protocol, a page at `/`, `/metrics`; every
connection a stream of one Engine (a SharedRecognizer's: in process, in child processes or on Ray), so all of
them share each batched tick."""
