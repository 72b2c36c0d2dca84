"""rnnstream on Ray: the core's stages as actors (`actors`), Ray start-up (`cluster`), sessions (`session`)."""
