# Cutover itself as a FROM scratch image: the statically linked binary and an empty
# state directory, nothing else (no shell, no libc, nothing to patch).
#
#   scripts/build-release.sh --docker     builds dist/cutover, then this image
#   docker run -v $PWD/cutover.toml:/etc/cutover/cutover.toml:ro \
#              -v cutover-state:/var/lib/cutover -p 7070:7070 -p 8080:8080 cutover:0.1.0
#
# In the config: `[daemon] state_dir = "/var/lib/cutover"`, `[api] listen =
# "0.0.0.0:7070"` with a token of 32+ characters (CUTOVER_TOKEN), and releases the
# container can reach (the process runtime runs them inside this container, so they
# must be static binaries mounted in; the Docker runtime needs the engine's socket
# mounted, which is root on the host).
FROM scratch
COPY --chown=65532:65532 dist/state /var/lib/cutover
COPY dist/cutover /cutover
USER 65532:65532
WORKDIR /var/lib/cutover
ENV CUTOVER_CONFIG=/etc/cutover/cutover.toml CUTOVER_LOG_FORMAT=json
EXPOSE 7070
ENTRYPOINT ["/cutover"]
CMD ["serve"]
