package pskcli

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
)

// printKeyBlock prints an identity and its key for the device, to stdout
// only: in hex, the text form LwM2M clients take (Zephyr's
// CONFIG_LWM2M_APP_PSK, Wakaama's lwm2mclient -k, Anjay's demo --key,
// Leshan's UI), and as a C array for firmware that embeds the bytes
// (mbedTLS' mbedtls_ssl_conf_psk, Anjay's security object, Zephyr's TLS
// credentials).
func printKeyBlock(w io.Writer, title string, k pskstore.Key) {
	fmt.Fprintf(w, "# %s\n", title)
	if export.Printable(k.Identity) {
		fmt.Fprintf(w, "identity      %s\n", k.Identity)
	}
	fmt.Fprintf(w, "identity_hex  %s\n", hex.EncodeToString(k.Identity))
	fmt.Fprintf(w, "key_hex       %s\n", hex.EncodeToString(k.Secret))
	fmt.Fprintf(w, "hash          %s\n", pskstore.Hash(k.Hash))
	if !export.Printable(k.Identity) {
		fmt.Fprintf(w, "identity_c\n%s", cArray("psk_identity", k.Identity))
	}
	fmt.Fprintf(w, "key_c\n%s", cArray("psk_key", k.Secret))
}

// cArray renders b as a C array definition, eight bytes a line.
func cArray(name string, b []byte) string {
	var s strings.Builder
	fmt.Fprintf(&s, "  static const uint8_t %s[%d] = {\n", name, len(b))
	for i := 0; i < len(b); i += 8 {
		s.WriteString("     ")
		for _, c := range b[i:min(i+8, len(b))] {
			fmt.Fprintf(&s, " 0x%02x,", c)
		}
		s.WriteString("\n")
	}
	s.WriteString("  };\n")
	return s.String()
}

// plainID is an identity for tables: text as is, anything else as hex:….
func plainID(id []byte) string {
	if export.Printable(id) {
		return string(id)
	}
	return "hex:" + hex.EncodeToString(id)
}
