/* packyard's disk boot sector: loads a Linux bzImage and its initramfs from the raw disk with the
 * BIOS (INT 13h extended reads, INT 15h AH=87h copies to high memory) and starts it by the x86
 * Linux boot protocol (Documentation/x86/boot.rst). Only what the test guest needs: no partition
 * table, no file system. build.sh writes the layout into the `params` block below:
 *   LBA 0   this sector          LBA 1   the kernel command line (NUL-terminated, < 512 bytes)
 *   LBA 2   the bzImage          then    the initramfs (sector-aligned)
 * Progress and errors go straight to COM1 (0x3f8), which is the guest's serial console. */
    .code16
    .set DAP, 0x600                 /* 16 bytes: INT 13h disk address packet */
    .set GDT, 0x610                 /* 48 bytes: INT 15h AH=87h descriptor table */
    .text
    .globl _start
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7c00, %sp
    sti
    movb %dl, drive
    movw $DAP, %di                  /* DAP and the INT 15h/87h GDT live in zeroed low memory */
    movw $0x40, %cx
    xorb %al, %al
    rep stosb
    movb $0x10, DAP
    movl $0x0000ffff, GDT + 0x10    /* source descriptor: base 0x20000, limit 64 KiB, data */
    movl $0x00009302, GDT + 0x14
    movw $0xffff, GDT + 0x18        /* destination: base patched per copy */
    movb $0x93, GDT + 0x1d
    movw $msg_boot, %si
    call puts

    movl $1, %eax                   /* command line -> 0x1e000 */
    movw $1, %cx
    movw $0x1000, %bx
    movw $0xe000, %di
    call read
    movl kernel_lba, %eax           /* first kernel sector: how many setup sectors follow */
    movw $1, %cx
    movw $0x1000, %bx
    xorw %di, %di
    call read
    movw $0x1000, %ax
    movw %ax, %es
    movb %es:0x1f1, %cl
    testb %cl, %cl
    jnz 1f
    movb $4, %cl
1:  xorb %ch, %ch
    incw %cx
    pushw %cx
    movl kernel_lba, %eax           /* real-mode part -> 0x10000 */
    movw $0x1000, %bx
    xorw %di, %di
    call read
    popw %cx

    movzwl %cx, %ecx                /* protected-mode part -> 0x100000 */
    movl kernel_lba, %eax
    addl %ecx, %eax
    movl kernel_sectors, %edx
    subl %ecx, %edx
    movl $0x100000, %edi
    call readhigh

    movw $0xe801, %ax               /* initramfs: as high as RAM (minus 4 MiB for the BIOS) allows */
    int $0x15
    jc error
    testw %dx, %dx
    jnz 2f
    movw %bx, %dx
2:  movzwl %dx, %edi
    shll $16, %edi
    addl $0x1000000 - 0x400000, %edi
    subl initrd_bytes, %edi
    andl $0xfffff000, %edi
    movw $0x1000, %ax
    movw %ax, %es
    movl %es:0x22c, %eax            /* initrd_addr_max */
    subl initrd_bytes, %eax
    andl $0xfffff000, %eax
    cmpl %eax, %edi
    jbe 3f
    movl %eax, %edi
3:  movl %edi, %es:0x218            /* ramdisk_image */
    movl initrd_bytes, %eax
    movl %eax, %es:0x21c            /* ramdisk_size */
    movb $0xff, %es:0x210           /* type_of_loader: undefined */
    orb $0x80, %es:0x211            /* CAN_USE_HEAP */
    movw $0xde00, %es:0x224         /* heap_end_ptr */
    movl $0x1e000, %es:0x228        /* cmd_line_ptr */
    movl initrd_lba, %eax
    movl initrd_sectors, %edx
    call readhigh

    cli
    movw $0x1000, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movw $0xe000, %sp
    ljmp $0x1020, $0

/* %eax = first LBA, %edx = sectors, %edi = physical destination; 32 KiB at a time via 0x20000 */
readhigh:
    testl %edx, %edx
    jz 9f
    movl %edx, %ecx
    cmpl $64, %ecx
    jbe 1f
    movl $64, %ecx
1:  pushal
    movw $0x2000, %bx
    xorw %di, %di
    call read
    popal
    pushal
    movl %edi, %eax
    movw %ax, GDT + 0x1a
    shrl $16, %eax
    movb %al, GDT + 0x1c
    movb %ah, GDT + 0x1f
    shlw $8, %cx                    /* words */
    xorw %ax, %ax
    movw %ax, %es
    movw $GDT, %si
    movb $0x87, %ah
    int $0x15
    jc error
    popal
    addl %ecx, %eax
    subl %ecx, %edx
    shll $9, %ecx
    addl %ecx, %edi
    jmp readhigh
9:  ret

/* %eax = LBA, %cx = sectors (<= 127), %bx:%di = destination */
read:
    movw %cx, DAP + 2
    movw %di, DAP + 4
    movw %bx, DAP + 6
    movl %eax, DAP + 8
    movw $DAP, %si
    movb drive, %dl
    movb $0x42, %ah
    int $0x13
    jc error
    ret

puts:
    lodsb
    testb %al, %al
    jz 1f
    movw $0x3f8, %dx
    outb %al, %dx
    jmp puts
1:  ret

error:
    movw $msg_err, %si
    call puts
4:  hlt
    jmp 4b

msg_boot: .asciz "packyard-boot\r\n"
msg_err:  .asciz "packyard-boot: E\r\n"
drive:    .byte 0x80

    .org 0x1e4
params:                                 /* written by build.sh */
kernel_lba:     .long 2
kernel_sectors: .long 0
initrd_lba:     .long 0
initrd_sectors: .long 0
initrd_bytes:   .long 0
    .org 0x1fe
    .byte 0x55, 0xaa
