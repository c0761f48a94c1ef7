# Builds the tierlog binary into a small image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/tierlog ./cmd/tierlog

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/tierlog /usr/local/bin/tierlog
VOLUME /data
EXPOSE 7070 7071 9092
ENTRYPOINT ["/usr/local/bin/tierlog"]
CMD ["serve", "--data-dir", "/data", "--grpc-addr", "0.0.0.0:7070", "--http-addr", "0.0.0.0:7071", "--kafka-addr", "0.0.0.0:9092"]
