package etcdserver

import (
	"context"
	"log/slog"
	"slices"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap logger that writes to l, for etcd's server
// and client, which only log through zap. etcd logs every routine step at
// info level, so info becomes debug here; warnings and errors keep their
// level, except known noise (see isNoise). quiet also turns warnings into
// debug, for the client, which warns on every retried request (as when
// ClusterHealth probes a member that is down).
func newZapLogger(l *slog.Logger, quiet bool) *zap.Logger {
	return zap.New(&slogCore{h: l.Handler(), quiet: quiet})
}

// slogCore is a zapcore.Core over a slog.Handler.
type slogCore struct {
	h     slog.Handler
	attrs []slog.Attr // from With, in order
	quiet bool
}

func (c *slogCore) level(l zapcore.Level) slog.Level {
	if c.quiet && l == zapcore.WarnLevel {
		return slog.LevelDebug
	}
	return slogLevel(l)
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.InfoLevel:
		// etcd's debug is dropped (below slog's debug), info becomes debug.
		return slog.LevelDebug + slog.Level(l-zapcore.InfoLevel)*4
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), c.level(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	cc := *c
	cc.attrs = append(slices.Clip(c.attrs), fieldAttrs(fields)...)
	return &cc
}

func (c *slogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *slogCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	level := c.level(ent.Level)
	attrs := append(slices.Clip(c.attrs), fieldAttrs(fields)...)
	if level > slog.LevelInfo && isNoise(ent.Message, attrs) {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !c.h.Enabled(ctx, level) {
		return nil
	}
	r := slog.NewRecord(ent.Time, level, ent.Message, 0)
	if ent.LoggerName != "" {
		// "server" (the embedded member) or "client".
		r.AddAttrs(slog.String("etcd", ent.LoggerName))
	}
	r.AddAttrs(attrs...)
	return c.h.Handle(ctx, r)
}

func (c *slogCore) Sync() error { return nil }

// fieldAttrs converts zap fields to slog attributes.
func fieldAttrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		// A field normally adds one key; sort for a stable order otherwise.
		keys := make([]string, 0, len(enc.Fields))
		for k := range enc.Fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			attrs = append(attrs, slog.Any(k, enc.Fields[k]))
		}
	}
	return attrs
}

// isNoise matches what etcd logs at warn or error level when it is
// stopped on purpose (etcd-io/etcd#7019, #17424), and warnings about
// settings that are deliberate here: one port for gRPC and HTTP, simple
// auth tokens (auth is off on the embedded member), and a retry message.
func isNoise(msg string, attrs []slog.Attr) bool {
	for _, prefix := range []string{
		"Running http and grpc server on single port",
		"simple token is not cryptographically signed",
		// Twice a second while a read waits for a quorum; Health and the
		// server's "etcd unhealthy" say so once.
		"waiting for ReadIndex response took too long",
	} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	for _, a := range attrs {
		if a.Key != "error" {
			continue
		}
		s := strings.ToLower(a.Value.String())
		for _, noise := range []string{"use of closed network connection", "server closed", "the server has been stopped", "server is stopping", "request cancelled", "context canceled"} {
			if strings.Contains(s, noise) {
				return true
			}
		}
	}
	return false
}
