// Command grpc_load is the gRPC load generator of `python -m benchmarks ingest`: device streams on
// michi.v1.Ingest/StreamUploads, each keeping a window of uploads unacknowledged, every upload with
// a fresh upload id.
//
//	grpc_load MANIFEST
//
// MANIFEST is a JSON file written by benchmarks/generators.py (go_stream_load):
//
//	{"target": "127.0.0.1:50051", "window": 8, "duration_s": 20, "run": 3,
//	 "streams": [{"token": "...", "uploads": [{"path": "...", "upload_at": 2, "trip_at": 80, "trip": 0}, ...]}, ...]}
//
// `upload_at` and `trip_at` are the 0-based offsets of the 36-character upload and trip ids inside
// the serialized upload. Each send swaps in an upload id unique to the run, stream and send, and a
// trip id unique to the run, stream, round and trip, so ingest never sees a duplicate and each trip's
// sequences stay in order. When the duration is over, the streams finish writing, collect their
// last acknowledgements and close; one JSON line with the figures goes to standard output.
//
// Go, not Python: on two cores the grpc.aio client took 0.22-0.25 ms of CPU per upload, as much as a
// quarter of ingest's own, and ran on the cores ingest was measured on.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	streamMethod = "/michi.v1.Ingest/StreamUploads"
	idLength     = 36
)

// UploadAck.outcome (michi.v1.UploadOutcome) as the HTTP status it stands for, like the Python generator.
var ackStatuses = map[uint64]string{1: "202", 2: "200", 3: "400"}

type uploadEntry struct {
	Path     string `json:"path"`
	UploadAt int    `json:"upload_at"`
	TripAt   int    `json:"trip_at"`
	Trip     int    `json:"trip"`
}

type streamEntry struct {
	Token   string        `json:"token"`
	Uploads []uploadEntry `json:"uploads"`
}

type manifest struct {
	Target    string        `json:"target"`
	Window    int           `json:"window"`
	DurationS float64       `json:"duration_s"`
	Run       int           `json:"run"`
	Streams   []streamEntry `json:"streams"`
}

type template struct {
	body     []byte
	uploadAt int
	tripAt   int
	trip     int
}

// figures is what one stream measured; they are merged into the printed line.
type figures struct {
	latencies []time.Duration
	statuses  map[string]int
	reasons   map[string]int
	errors    []string
}

// rawCodec sends and receives message bytes as they are: the uploads are serialized already.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// ackOutcome reads outcome (2) and reason (4) of a serialized UploadAck.
func ackOutcome(ack []byte) (uint64, string, error) {
	var outcome uint64
	var reason string
	for len(ack) > 0 {
		number, kind, length := protowire.ConsumeTag(ack)
		if length < 0 {
			return 0, "", protowire.ParseError(length)
		}
		ack = ack[length:]
		switch {
		case number == 2 && kind == protowire.VarintType:
			value, n := protowire.ConsumeVarint(ack)
			if n < 0 {
				return 0, "", protowire.ParseError(n)
			}
			outcome, ack = value, ack[n:]
		case number == 4 && kind == protowire.BytesType:
			value, n := protowire.ConsumeBytes(ack)
			if n < 0 {
				return 0, "", protowire.ParseError(n)
			}
			reason, ack = string(value), ack[n:]
		default:
			n := protowire.ConsumeFieldValue(number, kind, ack)
			if n < 0 {
				return 0, "", protowire.ParseError(n)
			}
			ack = ack[n:]
		}
	}
	return outcome, reason, nil
}

func loadTemplates(entries []uploadEntry) ([]template, error) {
	templates := make([]template, 0, len(entries))
	for _, entry := range entries {
		body, err := os.ReadFile(entry.Path)
		if err != nil {
			return nil, err
		}
		for _, at := range []int{entry.UploadAt, entry.TripAt} {
			if at < 0 || at+idLength > len(body) {
				return nil, fmt.Errorf("%s: id offset %d outside the body", entry.Path, at)
			}
		}
		templates = append(templates, template{body, entry.UploadAt, entry.TripAt, entry.Trip})
	}
	if len(templates) == 0 {
		return nil, fmt.Errorf("a stream without uploads")
	}
	return templates, nil
}

// runStream keeps `window` uploads in flight on one StreamUploads call until `deadline`.
func runStream(target, token string, templates []template, window, run, number int, deadline time.Time) figures {
	result := figures{statuses: map[string]int{}, reasons: map[string]int{}}
	// One connection per stream, as each device has its own.
	connection, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		result.errors = append(result.errors, err.Error())
		return result
	}
	defer connection.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	stream, err := connection.NewStream(
		ctx,
		&grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		streamMethod,
		grpc.ForceCodecV2(rawCodec{}),
	)
	if err != nil {
		result.errors = append(result.errors, err.Error())
		return result
	}
	slots := make(chan struct{}, window)
	// Send times in send order: acknowledgements come back in stream order.
	sent := make(chan time.Time, window+1)
	writeErrors := make(chan error, 1)
	go func() {
		defer close(sent)
		for counter := 0; time.Now().Before(deadline); counter++ {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				writeErrors <- nil
				return
			}
			entry := templates[counter%len(templates)]
			round := counter / len(templates)
			body := append([]byte(nil), entry.body...)
			copy(body[entry.uploadAt:], fmt.Sprintf("%06x%02x-%04x-4000-8000-%012x", run, number, round%65536, counter))
			copy(body[entry.tripAt:], fmt.Sprintf("%06x%02x-%04x-4000-9000-%012x", run, number, round%65536, entry.trip))
			sent <- time.Now()
			if err := stream.SendMsg(&body); err != nil {
				writeErrors <- err
				return
			}
		}
		writeErrors <- stream.CloseSend()
	}()
	for at := range sent {
		var ack []byte
		if err := stream.RecvMsg(&ack); err != nil {
			result.errors = append(result.errors, err.Error())
			cancel()
			break
		}
		result.latencies = append(result.latencies, time.Since(at))
		outcome, reason, err := ackOutcome(ack)
		if err != nil {
			result.errors = append(result.errors, err.Error())
			cancel()
			break
		}
		status, known := ackStatuses[outcome]
		if !known {
			status = "0"
		}
		result.statuses[status]++
		if reason != "" {
			result.reasons[reason]++
		}
		<-slots
	}
	if err := <-writeErrors; err != nil {
		result.errors = append(result.errors, err.Error())
	}
	return result
}

func percentile(sorted []time.Duration, fraction float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(fraction * float64(len(sorted)-1))
	return sorted[index].Microseconds()
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc_load MANIFEST")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var plan manifest
	if err := json.Unmarshal(raw, &plan); err != nil {
		fmt.Fprintln(os.Stderr, "manifest:", err)
		os.Exit(1)
	}
	streams := make([][]template, len(plan.Streams))
	for index, stream := range plan.Streams {
		if streams[index], err = loadTemplates(stream.Uploads); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	began := time.Now()
	deadline := began.Add(time.Duration(plan.DurationS * float64(time.Second)))
	results := make([]figures, len(plan.Streams))
	var group sync.WaitGroup
	for index, stream := range plan.Streams {
		group.Add(1)
		go func() {
			defer group.Done()
			results[index] = runStream(plan.Target, stream.Token, streams[index], plan.Window, plan.Run, index, deadline)
		}()
	}
	group.Wait()
	elapsed := time.Since(began)
	latencies := []time.Duration{}
	statuses, reasons := map[string]int{}, map[string]int{}
	errors := []string{}
	for _, result := range results {
		latencies = append(latencies, result.latencies...)
		for status, count := range result.statuses {
			statuses[status] += count
		}
		for reason, count := range result.reasons {
			reasons[reason] += count
		}
		errors = append(errors, result.errors...)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	line, _ := json.Marshal(map[string]any{
		"duration_us": elapsed.Microseconds(),
		"statuses":    statuses,
		"reasons":     reasons,
		"errors":      errors,
		"p50_us":      percentile(latencies, 0.5),
		"p99_us":      percentile(latencies, 0.99),
	})
	fmt.Println(string(line))
}
