"""Live input: PortAudio capture (`microphone`) and the captioning loop (`listen`)."""
