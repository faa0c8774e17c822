package payload

import (
	"context"
	"errors"
	"io"

	"golang.org/x/sync/errgroup"
)

// Buffering of the streaming passes. Every pass keeps pipeBuffers buffers
// of pipeChunk bytes in flight, so reading (or decompressing), hashing and
// writing run at the same time on different cores.
var (
	pipeChunk   = 1 << 20
	pipeBuffers = 8
)

// chunk is one buffer of a pipeline and its offset in the stream.
type chunk struct {
	b   []byte
	off int64
}

// stage consumes one chunk. Stages see the chunks in stream order.
type stage func(c chunk) error

// runPipeline calls produce in one goroutine to fill buffers and runs every
// stage in its own goroutine, in order, on each filled buffer. produce
// returns io.EOF (with or without bytes) at the end of the stream; any
// other error stops the pipeline, and the bytes of that call are dropped.
// ctx is checked between chunks. The first error is returned. size, the
// expected stream length, only limits the buffer size for small streams.
func runPipeline(ctx context.Context, size int64, produce func(buf []byte) (int, error), stages ...stage) error {
	g, ctx := errgroup.WithContext(ctx)
	bufSize := pipeChunk
	if size < int64(bufSize) {
		bufSize = int(max(size, 4096))
	}
	free := make(chan []byte, pipeBuffers)
	allocated := 0
	first := make(chan chunk, pipeBuffers)
	g.Go(func() error {
		defer close(first)
		var off int64
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			var buf []byte
			select {
			case buf = <-free:
			default:
				if allocated < pipeBuffers { // allocate buffers only as needed
					allocated++
					buf = make([]byte, bufSize)
					break
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case buf = <-free:
				}
			}
			n, err := produce(buf)
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if n > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case first <- chunk{b: buf[:n], off: off}:
				}
				off += int64(n)
			} else {
				free <- buf
			}
			if err != nil { // io.EOF
				return nil
			}
		}
	})
	in := first
	for i, st := range stages {
		src := in
		last := i == len(stages)-1
		var out chan chunk
		if !last {
			out = make(chan chunk, pipeBuffers)
		}
		g.Go(func() error {
			if out != nil {
				defer close(out)
			}
			for c := range src {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := st(c); err != nil {
					return err
				}
				if last {
					free <- c.b[:cap(c.b)]
					continue
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case out <- c:
				}
			}
			return nil
		})
		in = out
	}
	return g.Wait()
}

// readAtProducer returns a producer reading size bytes from r starting at
// off; a short read is io.ErrUnexpectedEOF.
func readAtProducer(r io.ReaderAt, off, size int64) func([]byte) (int, error) {
	pos := int64(0)
	return func(buf []byte) (int, error) {
		if pos >= size {
			return 0, io.EOF
		}
		if rest := size - pos; rest < int64(len(buf)) {
			buf = buf[:rest]
		}
		if err := readFullAt(r, buf, off+pos); err != nil {
			return 0, err
		}
		pos += int64(len(buf))
		return len(buf), nil
	}
}
