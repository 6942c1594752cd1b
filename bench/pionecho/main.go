// Command pionecho is the baseline of the benchmarks: the least a
// pion/dtls/v4 PSK server can do. dtls.ListenAddr with a PSK callback over
// the identities of a key file, and every datagram echoed back on the same
// session. It offers what the gateway offers by default (DTLS 1.3 and 1.2,
// the gateway's cipher suites, X25519, 8-byte Connection IDs, no identity
// hint), so the difference between the two is the gateway's own work:
// store lookup and policy, its demultiplexer, LwM2M inspection and the
// upstream socket.
//
//	pionecho --listen 127.0.0.1:5684 --keys keys.yaml
//
// It prints "listening ADDR" on stdout once bound, and runs until SIGINT or
// SIGTERM. --pprof serves net/http/pprof (goroutine counts, CPU profiles).
package main

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pionecho:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:5684", "UDP address to serve DTLS on")
	keysPath := flag.String("keys", "", "key file (the gateway's YAML format)")
	cidLen := flag.Int("cid", 8, "Connection ID length; 0 disables")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address")
	flag.Parse()
	if *keysPath == "" {
		return errors.New("--keys FILE is required")
	}
	data, err := os.ReadFile(*keysPath)
	if err != nil {
		return err
	}
	keys, err := file.Parse(data)
	if err != nil {
		return err
	}
	type entry struct {
		key  []byte
		hash crypto.Hash
	}
	byID := make(map[string]entry, len(keys))
	for _, k := range keys {
		byID[string(k.Identity)] = entry{k.Secret, k.Hash}
	}
	addr, err := net.ResolveUDPAddr("udp", *listen)
	if err != nil {
		return err
	}
	opts := []dtls.ServerOption{
		dtls.WithPSK(nil, func(ids [][]byte) (*dtls.PSK, error) {
			for _, id := range ids {
				if e, ok := byID[string(id)]; ok {
					return &dtls.PSK{Identity: id, Key: e.key, Hash: e.hash}, nil
				}
			}
			return nil, nil
		}),
		dtls.WithCipherSuites(
			ciphersuite.TLS_AES_128_GCM_SHA256, ciphersuite.TLS_AES_256_GCM_SHA384, ciphersuite.TLS_CHACHA20_POLY1305_SHA256,
			ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256, ciphersuite.TLS_PSK_WITH_AES_128_CCM_8,
			ciphersuite.TLS_PSK_WITH_AES_128_CCM, ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256),
		dtls.WithEllipticCurves(elliptic.X25519),
		dtls.WithMTU(1200),
		dtls.WithLoggerFactory(&logging.DefaultLoggerFactory{DefaultLogLevel: logging.LogLevelDisabled}),
	}
	if *cidLen > 0 {
		opts = append(opts, dtls.WithConnectionID(dtls.RandomCIDGenerator(*cidLen), dtls.CIDPathMigrationUnsafe))
	}
	ln, err := dtls.ListenAddr("udp", addr, opts...)
	if err != nil {
		return err
	}
	if *pprofAddr != "" {
		pl, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return err
		}
		go func() { _ = http.Serve(pl, nil) }()
	}
	fmt.Printf("listening %s\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := make(map[net.Conn]struct{})
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			continue
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(c.(*dtls.Conn))
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
	mu.Lock()
	for c := range conns {
		_ = c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return nil
}

// serve runs one session: the handshake, then every datagram echoed.
func serve(c *dtls.Conn) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := c.HandshakeContext(ctx)
	cancel()
	if err != nil {
		return
	}
	buf := make([]byte, 8192)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}
