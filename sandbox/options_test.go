//go:build linux

package sandbox

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOptionsTxQueueLen(t *testing.T) {
	tests := []struct {
		name    string
		in      int
		want    int
		wantErr string
	}{
		{name: "default", in: 0, want: DefaultTxQueueLen},
		{name: "one", in: 1, want: 1},
		{name: "max", in: 65536, want: 65536},
		{name: "negative", in: -1, wantErr: "sandbox: TxQueueLen -1: want 1-65536 packets"},
		{name: "too long", in: 65537, wantErr: "sandbox: TxQueueLen 65537: want 1-65536 packets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{TxQueueLen: tt.in}
			cc, err := o.check()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("fill() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, cc.TxQueueLen); diff != "" {
				t.Errorf("the guest's TxQueueLen (-want +got):\n%s", diff)
			}
		})
	}
}
